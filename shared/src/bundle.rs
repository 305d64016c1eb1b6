//! `.dmpkg` bundles: a signed folder (a package or a client deployment) as one file, so a
//! memory card, any HTTPS file server and any hawkBit-compatible server can hold it as a single
//! artifact. Format: `docs/deployment-folder.md`.
//!
//! A bundle is a tar archive whose first three entries are `manifest.json`, `manifest.sig` and
//! `publisher.pem`, followed by the manifest's files. Unpacking trusts nothing in it: the
//! archive is read as a stream by the `tar` crate, the signature is verified before any other
//! entry is written, and then every entry must be a regular file the signed manifest lists,
//! at a safe path, no larger than its signed size, written through a hashing reader and kept
//! only when it matches. Each way a bundle can attack its unpacker has its own error: a path
//! escaping the folder, a link, a device file, a duplicate, an oversized entry, too many
//! entries, a hash mismatch, a truncated archive.

use std::collections::BTreeSet;
use std::io::{self, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use crate::digest::HashingReader;
use crate::error::{Error, Result};
use crate::fs::{self as dmfs, AtomicFile};
use crate::manifest::{
    self, MANIFEST_FILE, MAX_FILES, MAX_MANIFEST_BYTES, MAX_SIGNATURE_BYTES, Manifest,
    PUBLISHER_FILE, SIGNATURE_FILE, SignatureFiles, VerifiedFolder,
};
use crate::pki::{self, Trust};

/// The file extension of a bundle.
pub const EXTENSION: &str = "dmpkg";

/// The signature files, which come first, with the most bytes each may hold.
const HEAD: [(&str, u64); 3] = [
    (MANIFEST_FILE, MAX_MANIFEST_BYTES),
    (SIGNATURE_FILE, MAX_SIGNATURE_BYTES),
    (PUBLISHER_FILE, pki::MAX_PEM_BYTES),
];

/// The most entries of any kind (files, folders) a bundle may hold.
const MAX_ENTRIES: usize = 2 * MAX_FILES + HEAD.len();

/// `<name>-<version>.dmpkg`, with anything but letters, digits, `.`, `_` and `-` replaced.
pub fn file_name(m: &Manifest) -> String {
    let clean: String = m
        .name
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || "._-".contains(c) { c } else { '_' })
        .collect();
    format!("{clean}-{}.{EXTENSION}", m.version)
}

/// Whether `path` names a bundle (a file ending in `.dmpkg`).
pub fn is_bundle(path: &Path) -> bool {
    path.extension().is_some_and(|e| e == EXTENSION) && path.is_file()
}

fn header(path: &str, size: u64, executable: bool) -> Result<tar::Header> {
    let mut h = tar::Header::new_gnu();
    h.set_path(path).map_err(|e| Error::UnsafePath { path: path.into(), reason: e.to_string() })?;
    h.set_size(size);
    h.set_mode(if executable { 0o755 } else { 0o644 });
    h.set_mtime(0);
    h.set_uid(0);
    h.set_gid(0);
    h.set_entry_type(tar::EntryType::Regular);
    h.set_cksum();
    Ok(h)
}

/// Writes the verified folder as a bundle at `out`, atomically. Every file is hashed while it
/// is written, so the bundle holds exactly what the manifest signs.
pub fn write(folder: &VerifiedFolder, out: &Path) -> Result<()> {
    let file = AtomicFile::create(out, dmfs::MODE_PUBLIC)?;
    let mut tar = tar::Builder::new(file);
    let head = HEAD.iter().map(|(name, cap)| (name.to_string(), None, *cap, false));
    let files = folder
        .manifest
        .files
        .iter()
        .map(|f| (f.path.clone(), Some((f.size, f.sha256.clone())), f.size, f.executable));
    for (path, expected, cap, executable) in head.chain(files) {
        let src = folder.path_of(&path);
        let len = std::fs::metadata(&src).map_err(dmfs::io_err("inspect", &src))?.len();
        if len > cap {
            return Err(Error::TooLarge { path: src, limit: cap, actual: len });
        }
        let input = dmfs::open_regular(&src)?;
        let mut reader = HashingReader::new(input, len);
        tar.append(&header(&path, len, executable)?, &mut reader)
            .map_err(dmfs::io_err("write", out))?;
        if let Some((size, sha256)) = expected {
            reader.finish().check(&src, size, &sha256)?;
        }
    }
    let mut file = tar.into_inner().map_err(dmfs::io_err("write", out))?;
    file.flush().map_err(dmfs::io_err("write", out))?;
    file.commit()
}

/// A bundle being read: where it is, where its files go (nowhere when only verifying), what
/// was seen.
struct Reader<'a> {
    bundle: &'a Path,
    dest: Option<&'a Path>,
    seen: BTreeSet<String>,
    entries: usize,
}

impl Reader<'_> {
    /// The entry's path, checked: UTF-8, relative, no `.`/`..`/hidden parts (a leading `./`
    /// is dropped), never seen before. Only files count as seen: a folder entry named like a
    /// signed file must not pass for it.
    fn path(&mut self, entry: &tar::Entry<'_, impl Read>) -> Result<String> {
        let raw = entry.path_bytes();
        let text = std::str::from_utf8(&raw).map_err(|_| Error::UnsafePath {
            path: String::from_utf8_lossy(&raw).chars().take(200).collect(),
            reason: "not UTF-8".into(),
        })?;
        let path = text.strip_prefix("./").unwrap_or(text).trim_end_matches('/').to_string();
        manifest::check_relative_path(&path)?;
        if entry.header().entry_type().is_dir() {
            return Ok(path);
        }
        if !self.seen.insert(path.clone()) {
            return Err(Error::BundleDuplicate { bundle: self.bundle.into(), entry: path });
        }
        Ok(path)
    }

    /// Refuses anything but regular files and folders; `Ok(false)` for a folder.
    fn is_file(&self, entry: &tar::Entry<'_, impl Read>, path: &str) -> Result<bool> {
        let t = entry.header().entry_type();
        if t.is_file() {
            return Ok(true);
        }
        if t.is_dir() {
            return Ok(false);
        }
        if t.is_symlink() || t.is_hard_link() {
            return Err(Error::BundleLink { bundle: self.bundle.into(), entry: path.into() });
        }
        let kind = match t {
            tar::EntryType::Char => "character device",
            tar::EntryType::Block => "block device",
            tar::EntryType::Fifo => "FIFO",
            _ => "special entry",
        };
        Err(Error::BundleSpecialFile {
            bundle: self.bundle.into(),
            entry: path.into(),
            kind: kind.into(),
        })
    }

    /// Reads one entry of at most `cap` bytes, through the hash, into `out`; checks it
    /// against `expected` (size and SHA-256) when given.
    fn read_entry(
        &self,
        entry: &mut tar::Entry<'_, impl Read>,
        rel: &str,
        cap: u64,
        expected: Option<(u64, &str)>,
        out: &mut impl Write,
    ) -> Result<()> {
        let size = entry.header().size().map_err(|e| self.truncated(e))?;
        if size > cap {
            let bundle = self.bundle.into();
            return Err(Error::BundleOversized { bundle, entry: rel.into(), size, limit: cap });
        }
        let mut reader = HashingReader::new(entry, cap);
        io::copy(&mut reader, out).map_err(|e| self.truncated(e))?;
        let hashed = reader.finish();
        if hashed.size != size {
            return Err(self.truncated(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("entry {rel} ends after {} of {size} bytes", hashed.size),
            )));
        }
        match expected {
            Some((size, sha256)) => hashed.check(&self.bundle.join(rel), size, sha256),
            None => Ok(()),
        }
    }

    /// Reads one entry and, when unpacking, writes it under the destination: it lands only
    /// when it matches.
    fn take(
        &self,
        entry: &mut tar::Entry<'_, impl Read>,
        rel: &str,
        expected: (u64, &str),
        mode: u32,
    ) -> Result<()> {
        let Some(dest) = self.dest else {
            return self.read_entry(entry, rel, expected.0, Some(expected), &mut io::sink());
        };
        let path = dest.join(rel);
        if let Some(parent) = path.parent() {
            dmfs::create_dir_all(parent, dmfs::MODE_DIR_PRIVATE)?;
        }
        let mut out = AtomicFile::create(&path, mode)?;
        self.read_entry(entry, rel, expected.0, Some(expected), &mut out)?;
        out.commit()
    }

    fn truncated(&self, e: io::Error) -> Error {
        Error::BundleTruncated { bundle: self.bundle.into(), reason: e.to_string() }
    }

    fn count(&mut self) -> Result<()> {
        self.entries += 1;
        if self.entries > MAX_ENTRIES {
            return Err(Error::BundleTooMany { bundle: self.bundle.into(), limit: MAX_ENTRIES });
        }
        Ok(())
    }

    /// The three signature files, which must come first, read into memory.
    fn head<R: Read>(&mut self, entries: &mut tar::Entries<'_, R>) -> Result<SignatureFiles> {
        let mut signed = SignatureFiles::default();
        for (name, _) in HEAD {
            let not_signed = || Error::NotSigned { dir: self.bundle.into(), what: name };
            let mut entry = match entries.next() {
                Some(e) => e.map_err(|e| self.truncated(e))?,
                // An archive that ends before its first entry without tar's end marker (an
                // empty file, say) is cut short, not unsigned.
                None if self.entries == 0 && !ends_with_marker(self.bundle)? => {
                    return Err(self.truncated(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "it holds no entry and no end-of-archive marker",
                    )));
                }
                None => return Err(not_signed()),
            };
            self.count()?;
            let path = self.path(&entry)?;
            let Some(cap) = HEAD.iter().find(|(n, _)| *n == path).map(|(_, cap)| *cap) else {
                return Err(not_signed());
            };
            if !self.is_file(&entry, &path)? {
                return Err(not_signed());
            }
            let mut bytes = Vec::new();
            self.read_entry(&mut entry, &path, cap, None, &mut bytes)?;
            signed.set(&path, bytes);
        }
        Ok(signed)
    }
}

/// Reads the whole bundle: the signature files first (verified before anything else is
/// taken), then every file the manifest lists, each checked. Files go under `dest` when given.
fn walk(
    bundle: &Path,
    dest: Option<&Path>,
    trust: &Trust,
    now: SystemTime,
) -> Result<(Manifest, Vec<crate::pki::Cert>)> {
    let file = dmfs::open_regular(bundle)?;
    let mut r = Reader { bundle, dest, seen: BTreeSet::new(), entries: 0 };
    let mut archive = tar::Archive::new(BufReader::new(file));
    let mut entries = archive.entries().map_err(|e| r.truncated(e))?;
    let signed = r.head(&mut entries)?;
    let (manifest, chain) = signed.verify(bundle, trust, now)?;
    if let Some(dest) = dest {
        let head = [
            (MANIFEST_FILE, &signed.manifest),
            (SIGNATURE_FILE, &signed.signature),
            (PUBLISHER_FILE, &signed.chain),
        ];
        for (name, data) in head {
            dmfs::write_atomic(&dest.join(name), data, dmfs::MODE_PRIVATE)?;
        }
    }
    for entry in entries {
        let mut entry = entry.map_err(|e| r.truncated(e))?;
        r.count()?;
        let path = r.path(&entry)?;
        if !r.is_file(&entry, &path)? {
            if manifest.file(&path).is_some() {
                return Err(Error::UnexpectedFile { path: bundle.join(&path), kind: "a folder" });
            }
            continue;
        }
        let Some(f) = manifest.file(&path) else {
            return Err(Error::UnexpectedFile { path: bundle.join(&path), kind: "a file" });
        };
        let mode = if f.executable { dmfs::MODE_EXEC } else { dmfs::MODE_PRIVATE };
        r.take(&mut entry, &path, (f.size, &f.sha256), mode)?;
    }
    if let Some(f) = manifest.files.iter().find(|f| !r.seen.contains(&f.path)) {
        if !ends_with_marker(bundle)? {
            return Err(r.truncated(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "it ends without tar's end-of-archive marker",
            )));
        }
        return Err(Error::MissingFile { path: bundle.join(&f.path) });
    }
    Ok((manifest, chain))
}

/// Verifies a bundle completely without writing anything: signature and chain against
/// `trust` at `now`, every entry. Returns its manifest and publisher chain.
pub fn verify(
    bundle: &Path,
    trust: &Trust,
    now: SystemTime,
) -> Result<(Manifest, Vec<crate::pki::Cert>)> {
    walk(bundle, None, trust, now)
}

/// Unpacks the bundle into `dest` (created 0700), verifying it as it goes; returns the
/// verified folder. On an error `dest` may hold a part of the bundle: the caller removes it.
pub fn unpack(
    bundle: &Path,
    dest: &Path,
    trust: &Trust,
    now: SystemTime,
) -> Result<VerifiedFolder> {
    dmfs::create_dir_all(dest, dmfs::MODE_DIR_PRIVATE)?;
    let (manifest, chain) = walk(bundle, Some(dest), trust, now)?;
    let publisher = chain
        .first()
        .cloned()
        .ok_or_else(|| Error::NotSigned { dir: bundle.into(), what: PUBLISHER_FILE })?;
    Ok(VerifiedFolder { dir: dest.to_path_buf(), manifest, publisher, chain })
}

/// Whether the archive ends with tar's end-of-archive marker (two zero blocks), which a
/// bundle cut short at an entry boundary lacks.
fn ends_with_marker(bundle: &Path) -> Result<bool> {
    use std::io::{Seek, SeekFrom};
    let mut f = dmfs::open_regular(bundle)?;
    let len = f.metadata().map_err(dmfs::io_err("inspect", bundle))?.len();
    if len < 1024 {
        return Ok(false);
    }
    let mut tail = [0u8; 1024];
    f.seek(SeekFrom::Start(len - 1024))
        .and_then(|_| f.read_exact(&mut tail))
        .map_err(dmfs::io_err("read", bundle))?;
    Ok(tail.iter().all(|b| *b == 0))
}

/// Where a deployment or package given as `source` really is: the folder itself, or the one
/// bundle a folder holds next to the program (a memory card with `dminstaller` and a bundle).
pub fn locate(source: &Path) -> Result<PathBuf> {
    if source.is_file() || source.join(MANIFEST_FILE).exists() {
        return Ok(source.to_path_buf());
    }
    let rd = std::fs::read_dir(source).map_err(dmfs::io_err("list", source))?;
    let bundles: Vec<PathBuf> = rd
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == EXTENSION))
        .collect();
    match bundles.as_slice() {
        [one] => Ok(one.clone()),
        [] => Err(Error::NotSigned { dir: source.to_path_buf(), what: MANIFEST_FILE }),
        _ => Err(Error::UnexpectedFile {
            path: source.to_path_buf(),
            kind: "more than one bundle (name the one to install with --source)",
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::StatusCode;
    use crate::testing::{Signed, setup_program, signed_folder};
    use std::fs::File;

    fn verified(f: &Signed) -> VerifiedFolder {
        manifest::verify_folder(&f.dir, &f.trust, f.now).unwrap()
    }

    fn unpack_to(f: &Signed, bundle: &Path) -> Result<VerifiedFolder> {
        let dest = f.tmp.path().join(format!("out-{}", rand()));
        unpack(bundle, &dest, &f.trust, f.now)
    }

    fn rand() -> u64 {
        let mut b = [0u8; 8];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b).unwrap();
        u64::from_le_bytes(b)
    }

    /// A hand-made archive: the folder's signature files, then `extra` entries as given.
    fn hostile(f: &Signed, extra: &[(&[u8], tar::EntryType, &[u8])]) -> PathBuf {
        let out = f.tmp.path().join(format!("hostile-{}.dmpkg", rand()));
        let mut b = tar::Builder::new(File::create(&out).unwrap());
        for (name, _) in HEAD {
            let data = std::fs::read(f.dir.join(name)).unwrap();
            b.append(&header(name, data.len() as u64, false).unwrap(), &data[..]).unwrap();
        }
        for (path, kind, data) in extra {
            let mut h = tar::Header::new_gnu();
            h.as_old_mut().name[..path.len()].copy_from_slice(path);
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_entry_type(*kind);
            if kind.is_symlink() || kind.is_hard_link() {
                h.set_link_name("/etc/shadow").unwrap();
            }
            h.set_cksum();
            b.append(&h, *data).unwrap();
        }
        b.finish().unwrap();
        out
    }

    fn file(
        path: &'static str,
        data: &'static [u8],
    ) -> (&'static [u8], tar::EntryType, &'static [u8]) {
        (path.as_bytes(), tar::EntryType::Regular, data)
    }

    const GOOD: [(&[u8], tar::EntryType, &[u8]); 3] = [
        (b"setup.sh", tar::EntryType::Regular, b"#!/bin/sh\necho hi\n"),
        (
            b"ClientSettings.ini",
            tar::EntryType::Regular,
            b"[Installation]\nClientInstallAction=Install\n",
        ),
        (b"docs/readme.txt", tar::EntryType::Regular, b"hello"),
    ];

    #[test]
    fn a_bundle_round_trips_exactly_what_was_signed() {
        let f = signed_folder(vec![setup_program()]);
        let v = verified(&f);
        let out = f.tmp.path().join(file_name(&v.manifest));
        assert!(out.ends_with("tools-1.0.0.1.dmpkg"));
        write(&v, &out).unwrap();
        assert!(is_bundle(&out));
        let back = unpack_to(&f, &out).unwrap();
        assert_eq!(back.manifest, v.manifest);
        assert_eq!(std::fs::read(back.path_of("docs/readme.txt")).unwrap(), b"hello");
        use std::os::unix::fs::PermissionsExt;
        let mode =
            |p: &str| std::fs::metadata(back.path_of(p)).unwrap().permissions().mode() & 0o777;
        assert_eq!((mode("setup.sh"), mode("docs/readme.txt")), (0o755, 0o600));
        assert_eq!(std::fs::metadata(&back.dir).unwrap().permissions().mode() & 0o777, 0o700);
        // The unpacked folder verifies as a folder too.
        manifest::verify_folder(&back.dir, &f.trust, f.now).unwrap();
        // And the hand-made good archive is a bundle as well.
        unpack_to(&f, &hostile(&f, &GOOD)).unwrap();
        // Verifying alone writes nothing.
        assert_eq!(verify(&out, &f.trust, f.now).unwrap().0, v.manifest);
    }

    #[test]
    fn each_attack_has_its_own_error_and_code() {
        let f = signed_folder(vec![setup_program()]);
        let with = |extra: Vec<(&'static [u8], tar::EntryType, &'static [u8])>| {
            let mut all = GOOD.to_vec();
            all.extend(extra);
            unpack_to(&f, &hostile(&f, &all)).unwrap_err()
        };
        let cases = [
            (with(vec![file("../../etc/evil", b"x")]), StatusCode::DM_E_UNSAFE_PATH),
            (
                with(vec![(b"docs/link", tar::EntryType::Symlink, b"")]),
                StatusCode::DM_E_BUNDLE_LINK,
            ),
            (with(vec![(b"docs/hard", tar::EntryType::Link, b"")]), StatusCode::DM_E_BUNDLE_LINK),
            (
                with(vec![(b"dev/sda", tar::EntryType::Block, b"")]),
                StatusCode::DM_E_BUNDLE_SPECIAL_FILE,
            ),
            (
                with(vec![(b"fifo", tar::EntryType::Fifo, b"")]),
                StatusCode::DM_E_BUNDLE_SPECIAL_FILE,
            ),
            (with(vec![file("docs/readme.txt", b"hello")]), StatusCode::DM_E_BUNDLE_DUPLICATE),
            (with(vec![file("extra.sh", b"#!/bin/sh\n")]), StatusCode::DM_E_UNEXPECTED_FILE),
        ];
        for (err, code) in cases {
            assert_eq!(err.code(), code, "{err}");
        }
        let evil = hostile(&f, &[GOOD[0], GOOD[1], GOOD[2], (b"x", tar::EntryType::Symlink, b"")]);
        let err = verify(&evil, &f.trust, f.now).unwrap_err();
        assert_eq!(err.code(), StatusCode::DM_E_BUNDLE_LINK, "verifying alone refuses it too");
        let mut swap = GOOD.to_vec();
        swap[2] = file("docs/readme.txt", b"HELLO");
        let err = unpack_to(&f, &hostile(&f, &swap)).unwrap_err();
        assert_eq!(err.code(), StatusCode::CRYPT_E_HASH_VALUE, "{err}");
        swap[2] = file("docs/readme.txt", b"hello, and a lot more than was signed");
        let err = unpack_to(&f, &hostile(&f, &swap)).unwrap_err();
        assert_eq!(err.code(), StatusCode::DM_E_BUNDLE_OVERSIZED, "{err}");
        let err = unpack_to(&f, &hostile(&f, &GOOD[..2])).unwrap_err();
        assert_eq!(err.code(), StatusCode::DM_E_MISSING_FILE, "{err}");
        // A folder entry named like a signed file does not pass for the file.
        let folder = (&b"docs/readme.txt/"[..], tar::EntryType::Directory, &b""[..]);
        let err = verify(&hostile(&f, &[GOOD[0], GOOD[1], folder]), &f.trust, f.now).unwrap_err();
        assert_eq!(err.code(), StatusCode::DM_E_UNEXPECTED_FILE, "{err}");
        let err = unpack_to(&f, &hostile(&f, &[GOOD[0], folder, GOOD[1]])).unwrap_err();
        assert_eq!(err.code(), StatusCode::DM_E_UNEXPECTED_FILE, "{err}");
    }

    #[test]
    fn truncated_and_foreign_archives() {
        let f = signed_folder(vec![setup_program()]);
        let v = verified(&f);
        let out = f.tmp.path().join("whole.dmpkg");
        write(&v, &out).unwrap();
        let bytes = std::fs::read(&out).unwrap();
        for cut in [600, bytes.len() - 1100, bytes.len() / 2] {
            let p = f.tmp.path().join(format!("cut-{cut}.dmpkg"));
            std::fs::write(&p, &bytes[..cut]).unwrap();
            let err = unpack_to(&f, &p).unwrap_err();
            assert!(
                matches!(
                    err.code(),
                    StatusCode::DM_E_BUNDLE_TRUNCATED | StatusCode::TRUST_E_NOSIGNATURE
                ),
                "cut at {cut}: {err}"
            );
        }
        let p = f.tmp.path().join("empty.dmpkg");
        std::fs::write(&p, b"").unwrap();
        let err = unpack_to(&f, &p).unwrap_err();
        assert_eq!(err.code(), StatusCode::DM_E_BUNDLE_TRUNCATED, "a zero-byte bundle: {err}");
        let p = f.tmp.path().join("random.dmpkg");
        std::fs::write(&p, vec![0x5a; 4096]).unwrap();
        assert!(unpack_to(&f, &p).is_err());
        // The payload before the signature: nothing is written before the signature checks.
        let out = f.tmp.path().join(format!("late-{}.dmpkg", rand()));
        let mut b = tar::Builder::new(File::create(&out).unwrap());
        b.append(&header("setup.sh", 3, true).unwrap(), &b"x=1"[..]).unwrap();
        b.finish().unwrap();
        let err = unpack_to(&f, &out).unwrap_err();
        assert_eq!(err.code(), StatusCode::TRUST_E_NOSIGNATURE, "{err}");
    }

    #[test]
    fn too_many_entries() {
        let f = signed_folder(vec![setup_program()]);
        let out = f.tmp.path().join("many.dmpkg");
        let mut b = tar::Builder::new(File::create(&out).unwrap());
        for (name, _) in HEAD {
            let data = std::fs::read(f.dir.join(name)).unwrap();
            b.append(&header(name, data.len() as u64, false).unwrap(), &data[..]).unwrap();
        }
        for i in 0..=MAX_ENTRIES {
            let mut h = tar::Header::new_gnu();
            h.set_path(format!("d{i}")).unwrap();
            h.set_entry_type(tar::EntryType::Directory);
            h.set_size(0);
            h.set_cksum();
            b.append(&h, io::empty()).unwrap();
        }
        b.finish().unwrap();
        let err = unpack_to(&f, &out).unwrap_err();
        assert_eq!(err.code(), StatusCode::DM_E_BUNDLE_TOO_MANY, "{err}");
    }

    #[test]
    fn a_folder_with_one_bundle_locates_it() {
        let f = signed_folder(vec![setup_program()]);
        assert_eq!(locate(&f.dir).unwrap(), f.dir);
        let card = f.tmp.path().join("card2");
        std::fs::create_dir_all(&card).unwrap();
        assert!(locate(&card).is_err());
        std::fs::write(card.join("a.dmpkg"), b"").unwrap();
        assert_eq!(locate(&card).unwrap(), card.join("a.dmpkg"));
        std::fs::write(card.join("b.dmpkg"), b"").unwrap();
        assert!(locate(&card).unwrap_err().to_string().contains("more than one bundle"));
    }
}
