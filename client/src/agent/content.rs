//! A package's content on the device: downloaded into `var/lib/dm/cache/action-<id>/`,
//! verified against its signed manifest and the `spc` store, then moved into
//! `var/lib/dm/packages/` for its program to run from.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use dm_shared::ddi::{Artifact, Chunk};
use dm_shared::fs as dmfs;
use dm_shared::manifest::{self, PackageKind, VerifiedFolder};
use dm_shared::{Context, bundle, certstore};
use log::info;

use super::net::Net;
use crate::error::{Error, Result};

/// The largest artifact taken.
const MAX_ARTIFACT: u64 = 16 << 30;
/// Free space kept beyond what a download needs.
const SPACE_MARGIN: u64 = 32 << 20;
/// The file counting an action's download attempts, in its cache folder.
const ATTEMPTS_FILE: &str = ".attempts";

/// Where an action's downloads go.
pub fn cache_dir(ctx: &Context, action: u64) -> PathBuf {
    ctx.layout.download_cache_dir().join(format!("action-{action}"))
}

pub use dm_shared::fs::partial_of;

/// Counts one more download attempt of an action; returns the count.
pub fn bump_attempts(ctx: &Context, action: u64) -> u32 {
    let dir = cache_dir(ctx, action);
    let p = dir.join(ATTEMPTS_FILE);
    let n = dmfs::read_optional(&p, 64)
        .ok()
        .flatten()
        .and_then(|b| String::from_utf8_lossy(&b).trim().parse::<u32>().ok())
        .unwrap_or(0)
        + 1;
    let _ = dmfs::create_dir_all(&dir, dmfs::MODE_DIR_PRIVATE);
    let _ = dmfs::write_atomic(&p, n.to_string().as_bytes(), dmfs::MODE_PRIVATE);
    n
}

/// Checks every artifact of a chunk before anything is fetched: safe names, sizes within
/// bounds, a SHA-256, https links, and room on the disk. Returns the bytes still to fetch.
fn check_artifacts(chunk: &Chunk, dir: &Path, url: &str) -> Result<u64> {
    let mut needed = 0u64;
    for a in &chunk.artifacts {
        manifest::check_relative_path(&a.filename)?;
        if a.size > MAX_ARTIFACT {
            return Err(dm_shared::Error::TooLarge {
                path: dir.join(&a.filename),
                limit: MAX_ARTIFACT,
                actual: a.size,
            }
            .into());
        }
        // A server may give only SHA-1 or MD5: the signed manifest (or the bundle's
        // signature) checks every byte after the download anyway.
        let sha = &a.hashes.sha256;
        if !sha.is_empty() && (sha.len() != 64 || !sha.bytes().all(|b| b.is_ascii_hexdigit())) {
            return Err(Error::Malformed {
                url: url.to_string(),
                reason: format!("artifact {}: {sha:?} is not a SHA-256", a.filename),
            });
        }
        let links = dm_shared::ddi::download_links(&a.links);
        if links.is_empty() {
            return Err(Error::Malformed {
                url: url.to_string(),
                reason: format!("artifact {} has no download link", a.filename),
            });
        }
        if let Some(href) = links.iter().find(|h| !h.starts_with("https://")) {
            return Err(Error::Insecure {
                url: href.to_string(),
                reason: format!("a download link of {} is not https", a.filename),
            });
        }
        let len = |p: &Path| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
        let dest = dir.join(&a.filename);
        needed += a.size.saturating_sub(len(&dest) + len(&partial_of(&dest)));
    }
    let free = dmfs::available_space(dir)?;
    if free < needed + SPACE_MARGIN {
        return Err(dm_shared::Error::Io {
            op: "download into",
            path: dir.to_path_buf(),
            source: std::io::Error::new(
                std::io::ErrorKind::StorageFull,
                format!(
                    "{needed} bytes to download but {free} bytes free (and {SPACE_MARGIN} kept)"
                ),
            ),
        }
        .into());
    }
    Ok(needed)
}

/// Whether the chunk is one `.dmpkg` bundle rather than a package's files: named so, or the
/// one artifact of a server without this project's metadata (the bundle reader then checks
/// its content).
pub fn is_bundle(chunk: &Chunk) -> bool {
    super::plan::bundle_candidate(chunk)
}

/// Where a bundle artifact is downloaded: beside the package folder it unpacks into.
fn bundle_file(ctx: &Context, action: u64) -> PathBuf {
    ctx.layout.download_cache_dir().join(format!("action-{action}.{}", bundle::EXTENSION))
}

/// The action's cache folder, made, once the chunk's artifacts passed [`check_artifacts`].
fn prepare(ctx: &Context, action: u64, chunk: &Chunk, url: &str) -> Result<PathBuf> {
    let dir = cache_dir(ctx, action);
    dmfs::create_dir_all(&dir, dmfs::MODE_DIR_PRIVATE)?;
    check_artifacts(chunk, &dir, url)?;
    Ok(dir)
}

/// Downloads every artifact of `chunk` for `action` that is not complete yet, resuming
/// partial files; `url` is the deployment's, for errors. A bundle is downloaded beside the
/// package folder, then unpacked into it, checked against its signature entry by entry.
pub fn download(
    ctx: &Context,
    net: &Net,
    action: u64,
    chunk: &Chunk,
    url: &str,
    stop: &AtomicBool,
) -> Result<()> {
    let dir = prepare(ctx, action, chunk, url)?;
    if !is_bundle(chunk) {
        for a in &chunk.artifacts {
            fetch(net, a, &dir.join(&a.filename), stop)?;
        }
        return Ok(());
    }
    let file = bundle_file(ctx, action);
    fetch(net, &chunk.artifacts[0], &file, stop)?;
    dmfs::remove_dir_all(&dir)?;
    let trust = certstore::trust(&ctx.layout, ctx.clock.now())?;
    let unpacked = bundle::unpack(&file, &dir, &trust, ctx.clock.now());
    dmfs::remove_file(&file)?;
    unpacked?;
    info!("unpacked the bundle {} into {}", chunk.artifacts[0].filename, dir.display());
    Ok(())
}

/// Downloads a system image, the chunk's one artifact, into the action's cache folder; its
/// signature is the update engine's to check. Returns the file.
pub fn download_image(
    ctx: &Context,
    net: &Net,
    action: u64,
    chunk: &Chunk,
    url: &str,
    stop: &AtomicBool,
) -> Result<PathBuf> {
    let dir = prepare(ctx, action, chunk, url)?;
    let a = &chunk.artifacts[0];
    let file = dir.join(&a.filename);
    fetch(net, a, &file, stop)?;
    Ok(file)
}

/// Downloads one artifact to `dest` unless it is there already.
fn fetch(net: &Net, a: &Artifact, dest: &Path, stop: &AtomicBool) -> Result<()> {
    if let Some(parent) = dest.parent() {
        dmfs::create_dir_all(parent, dmfs::MODE_DIR_PRIVATE)?;
    }
    if std::fs::metadata(dest).is_ok_and(|m| m.len() == a.size) {
        return Ok(());
    }
    let sources = dm_shared::ddi::download_links(&a.links);
    info!("downloading {} ({} bytes) from {} source(s)", a.filename, a.size, sources.len());
    let start = Instant::now();
    let sha256 = a.hashes.sha256.to_ascii_lowercase();
    if sha256.is_empty() {
        info!(
            "the server gives no SHA-256 for {}: its size is checked now, and its bytes by the package's signature",
            a.filename
        );
    }
    from_sources(net, &sources, a, dest, &sha256, stop)?;
    let secs = start.elapsed().as_secs_f64().max(0.001);
    let checked = if sha256.is_empty() {
        "size checked; its bytes are checked by the package's signature next"
    } else {
        "SHA-256 matches the server's; the package's signature is checked next"
    };
    info!("downloaded {} ({:.1} MB/s, {checked})", a.filename, a.size as f64 / secs / 1e6);
    Ok(())
}

/// Downloads `a` from the first of `sources` that serves it whole and as hashed; a source
/// that fails (unreachable, refusing, cut, or serving other bytes) is logged and the next one
/// tried, resuming at the same offset (bytes that failed the hash are dropped first).
fn from_sources(
    net: &Net,
    sources: &[&str],
    a: &Artifact,
    dest: &Path,
    sha256: &str,
    stop: &AtomicBool,
) -> Result<()> {
    let shown = |u: &str| super::net::redact_url(u.split_once('?').map_or(u, |(u, _)| u));
    let mut last = None;
    for (i, href) in sources.iter().enumerate() {
        match net.download(href, &partial_of(dest), dest, a.size, sha256, stop) {
            Ok(()) => {
                if i > 0 {
                    info!(
                        "downloaded {} from source {} of {}: {}",
                        a.filename,
                        i + 1,
                        sources.len(),
                        shown(href)
                    );
                }
                return Ok(());
            }
            Err(Error::Stopped) => return Err(Error::Stopped),
            Err(e) => {
                if let Some(next) = sources.get(i + 1) {
                    log::warn!(
                        "downloading {} from {} failed: {e}; trying the next source, {}",
                        a.filename,
                        shown(href),
                        shown(next)
                    );
                }
                last = Some(e);
            }
        }
    }
    Err(last.unwrap_or_else(|| Error::Malformed {
        url: String::new(),
        reason: format!("artifact {} has no download link", a.filename),
    }))
}

/// Verifies an action's downloaded package: signed by a publisher in the `spc` store, every
/// file as its manifest says, and of the advertised kind. Files become readable (and the
/// manifest's programs executable) only once verified.
pub fn verify(ctx: &Context, action: u64, kind: Option<PackageKind>) -> Result<VerifiedFolder> {
    verify_dir(ctx, &cache_dir(ctx, action), kind)
}

/// [`verify`] for the package in `dir` (one promoted to the packages folder).
pub fn verify_dir(ctx: &Context, dir: &Path, kind: Option<PackageKind>) -> Result<VerifiedFolder> {
    let dir = dir.to_path_buf();
    let trust = certstore::trust(&ctx.layout, ctx.clock.now())?;
    let v = manifest::verify_folder(&dir, &trust, ctx.clock.now())?;
    certstore::require_spc_publisher(&ctx.layout, &v.publisher)?;
    let Some(kind) = kind else {
        info!(
            "the server did not say what kind of package it is: the signed manifest says {}",
            v.manifest.kind
        );
        return finish_verify(&dir, v);
    };
    if v.manifest.kind != kind {
        return Err(dm_shared::Error::MalformedManifest {
            path: dir.join(manifest::MANIFEST_FILE),
            reason: format!("it is a {} package, advertised as {kind}", v.manifest.kind),
        }
        .into());
    }
    finish_verify(&dir, v)
}

/// Makes a verified package's files readable and its programs executable.
fn finish_verify(dir: &Path, v: VerifiedFolder) -> Result<VerifiedFolder> {
    for f in &v.manifest.files {
        let mode = if f.executable { dmfs::MODE_EXEC } else { dmfs::MODE_PUBLIC };
        dmfs::set_mode(&dir.join(&f.path), mode)?;
    }
    info!(
        "verified {} {} signed by {}",
        v.manifest.name,
        v.manifest.version,
        v.publisher.describe()
    );
    Ok(v)
}

/// Moves an action's verified content to `var/lib/dm/packages/<name>-<version>-<action>/`.
pub fn promote(ctx: &Context, action: u64, package: &str, version: &str) -> Result<PathBuf> {
    let packages = ctx.layout.packages_dir();
    let dest = promoted_dir(ctx, action, package, version);
    dmfs::create_dir_all(&packages, dmfs::MODE_DIR)?;
    dmfs::remove_dir_all(&dest)?;
    dmfs::rename(&cache_dir(ctx, action), &dest)?;
    let _ = dmfs::remove_file(&dest.join(ATTEMPTS_FILE));
    Ok(dest)
}

/// Where [`promote`] keeps action `action`'s package.
pub fn promoted_dir(ctx: &Context, action: u64, package: &str, version: &str) -> PathBuf {
    let clean = |s: &str| {
        s.chars()
            .map(|c| if c.is_ascii_alphanumeric() || "._-".contains(c) { c } else { '_' })
            .collect::<String>()
    };
    ctx.layout.packages_dir().join(format!("{}-{}-{action}", clean(package), clean(version)))
}
