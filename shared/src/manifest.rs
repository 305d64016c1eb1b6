//! The signed manifest of a deployment folder or package, and the verification of a folder
//! against it.
//!
//! A signed folder holds its files, `manifest.json` (what the folder is and the size and
//! SHA-256 of every file), `manifest.sig` (the publisher's signature over the exact bytes of
//! `manifest.json`) and `publisher.pem` (the publisher's code-signing certificate, then any
//! intermediates). See `docs/deployment-folder.md`.
//!
//! [`verify_folder`] trusts nothing in the folder: every read is capped, the manifest is parsed
//! strictly, the chain must reach the device's trusted roots with the codeSigning usage, and
//! every file is hashed while it is read. Any file the manifest does not list (other than
//! hidden ones) is refused, so nothing unsigned can ride along.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use crate::digest;
use crate::error::{Error, Result};
pub use crate::files::{FileEntry, check_relative_path};
use crate::pki::{self, Cert, Trust};
use crate::platform::Platform;
use crate::programs::{self, SignedProgram};
use crate::version::ClientVersion;
pub use crate::vocab::PackageKind;

/// The manifest's file name.
pub const MANIFEST_FILE: &str = "manifest.json";
/// The detached signature's file name.
pub const SIGNATURE_FILE: &str = "manifest.sig";
/// The publisher certificate chain's file name.
pub const PUBLISHER_FILE: &str = "publisher.pem";
/// The format tag this build writes: the manifest signs the package's programs.
pub const FORMAT: &str = "dm-manifest/2";
/// The first format, without programs. Client deployment folders signed with it still
/// install; packages signed with it are refused, since their programs are not signed.
pub const FORMAT_V1: &str = "dm-manifest/1";

/// The largest manifest accepted.
pub const MAX_MANIFEST_BYTES: u64 = 1024 * 1024;
/// The largest signature accepted.
pub const MAX_SIGNATURE_BYTES: u64 = 2048;
/// The most files a manifest may list.
pub const MAX_FILES: usize = 10_000;
/// The largest single file a manifest may list (16 GiB).
pub const MAX_FILE_SIZE: u64 = 16 << 30;

/// The manifest.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Always [`FORMAT`].
    pub format: String,
    /// What the folder is.
    pub kind: PackageKind,
    /// A name for people (`dm-client`, a package name).
    pub name: String,
    /// The version: of the client for a deployment, of the package otherwise.
    pub version: ClientVersion,
    /// Platforms the folder has binaries for.
    pub platforms: Vec<Platform>,
    /// When it was signed (RFC 3339).
    pub created: String,
    /// Every file, sorted by path.
    pub files: Vec<FileEntry>,
    /// The programs a device may run from the package (format 2).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub programs: Vec<SignedProgram>,
    /// Kind-specific data (programs of a package), kept as JSON and typed by its user.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<serde_json::Value>,
}

/// The programs a client deployment folder carries for each platform.
pub const CLIENT_PROGRAMS: [&str; 4] = ["dminstaller", "dmclientsetup", "dmsvc", "dmcertenroll"];

/// The file name of a client program for a platform: `dmsvc_linux-aarch64`.
pub fn program_file(program: &str, platform: &Platform) -> String {
    format!("{program}_{platform}")
}

fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

impl Manifest {
    /// Parses and checks a manifest. `path` names it in errors.
    pub fn parse(bytes: &[u8], path: &Path) -> Result<Manifest> {
        let bad = |reason: String| Error::MalformedManifest { path: path.to_path_buf(), reason };
        if bytes.len() as u64 > MAX_MANIFEST_BYTES {
            return Err(bad(format!("{} bytes; at most {MAX_MANIFEST_BYTES}", bytes.len())));
        }
        let m: Manifest = serde_json::from_slice(bytes).map_err(|e| bad(e.to_string()))?;
        if m.format != FORMAT && m.format != FORMAT_V1 {
            return Err(bad(format!(
                "format {:?} is not {FORMAT:?} or {FORMAT_V1:?}; this client is too old for it, or it is not a manifest",
                m.format
            )));
        }
        if m.format == FORMAT_V1 && !m.programs.is_empty() {
            return Err(bad(format!("format {FORMAT_V1} has no programs")));
        }
        if m.name.is_empty() || m.name.len() > 128 || m.name.chars().any(char::is_control) {
            return Err(bad("name must be 1 to 128 characters without control characters".into()));
        }
        if m.files.len() > MAX_FILES {
            return Err(bad(format!("{} files; at most {MAX_FILES}", m.files.len())));
        }
        let platforms: BTreeSet<&Platform> = m.platforms.iter().collect();
        if platforms.len() != m.platforms.len() {
            return Err(bad("a platform is listed twice".into()));
        }
        let mut seen = BTreeSet::new();
        for f in &m.files {
            check_relative_path(&f.path)?;
            if [MANIFEST_FILE, SIGNATURE_FILE, PUBLISHER_FILE].contains(&f.path.as_str()) {
                return Err(bad(format!("{} cannot list itself or its signature files", f.path)));
            }
            if !seen.insert(f.path.as_str()) {
                return Err(bad(format!("{} is listed twice", f.path)));
            }
            if !is_sha256_hex(&f.sha256) {
                return Err(bad(format!("{}: sha256 must be 64 lowercase hex digits", f.path)));
            }
            if f.size > MAX_FILE_SIZE {
                return Err(bad(format!(
                    "{}: {} bytes is more than the {MAX_FILE_SIZE} allowed",
                    f.path, f.size
                )));
            }
        }
        // A path that is also a folder of another path cannot exist on disk.
        for f in &m.files {
            let prefix = format!("{}/", f.path);
            let next = seen
                .range::<str, _>((
                    std::ops::Bound::Included(prefix.as_str()),
                    std::ops::Bound::Unbounded,
                ))
                .next();
            if next.is_some_and(|n| n.starts_with(&prefix)) {
                return Err(bad(format!("{} is listed both as a file and as a folder", f.path)));
            }
        }
        programs::check_all(&m.programs, &m.files).map_err(bad)?;
        if m.kind == PackageKind::ClientDeployment {
            if m.platforms.is_empty() {
                return Err(bad("a client deployment must name at least one platform".into()));
            }
            for p in &m.platforms {
                for prog in CLIENT_PROGRAMS {
                    let name = program_file(prog, p);
                    if !m.files.iter().any(|f| f.path == name && f.executable) {
                        return Err(bad(format!(
                            "it declares {p} but does not list the executable {name}"
                        )));
                    }
                }
            }
        }
        Ok(m)
    }

    /// Serializes the manifest the way `dmpack` signs it.
    pub fn to_json(&self) -> Result<Vec<u8>> {
        let mut out = serde_json::to_vec_pretty(self).map_err(|e| Error::MalformedManifest {
            path: PathBuf::from(MANIFEST_FILE),
            reason: format!("cannot be written as JSON: {e}"),
        })?;
        out.push(b'\n');
        Ok(out)
    }

    /// Checks that the manifest signs its programs: packages signed with the first format
    /// are refused (client deployments carry no programs and install either way).
    pub fn require_signed_programs(&self, path: &Path) -> Result<()> {
        if self.format == FORMAT_V1 && self.kind != PackageKind::ClientDeployment {
            return Err(Error::ManifestTooOld {
                path: path.to_path_buf(),
                format: self.format.clone(),
            });
        }
        Ok(())
    }

    /// The signed program of that name.
    pub fn program(&self, name: &str) -> Option<&SignedProgram> {
        self.programs.iter().find(|p| p.name == name)
    }

    /// The program run when the server names none: the one marked default, else the only
    /// one besides the health check.
    pub fn default_program(&self) -> Option<&SignedProgram> {
        let mut installs = self.programs.iter().filter(|p| !p.health_check);
        self.programs.iter().find(|p| p.default).or(match (installs.next(), installs.next()) {
            (Some(only), None) => Some(only),
            _ => None,
        })
    }

    /// The package's health check, if its publisher signed one.
    pub fn health_check(&self) -> Option<&SignedProgram> {
        self.programs.iter().find(|p| p.health_check)
    }

    /// The entry for a path.
    pub fn file(&self, path: &str) -> Option<&FileEntry> {
        self.files.iter().find(|f| f.path == path)
    }

    /// The sum of all file sizes.
    pub fn total_size(&self) -> u64 {
        self.files.iter().map(|f| f.size).sum()
    }
}

/// A folder whose signature, chain and files have all been checked.
#[derive(Debug, Clone)]
pub struct VerifiedFolder {
    /// The folder.
    pub dir: PathBuf,
    /// Its manifest.
    pub manifest: Manifest,
    /// The publisher certificate (first of the chain).
    pub publisher: Cert,
    /// The whole chain from `publisher.pem`.
    pub chain: Vec<Cert>,
}

impl VerifiedFolder {
    /// The absolute path of a listed file.
    pub fn path_of(&self, rel: &str) -> PathBuf {
        self.dir.join(rel)
    }

    /// Reads a listed file, checking its bytes against the signed manifest as they are read:
    /// the bytes returned are the bytes that were signed, whatever happened to the folder
    /// since it was verified.
    pub fn read_signed(&self, rel: &str) -> Result<Vec<u8>> {
        let path = self.path_of(rel);
        let f = self.manifest.file(rel).ok_or_else(|| Error::UnexpectedFile {
            path: path.clone(),
            kind: "a file that is not in the signed manifest",
        })?;
        let file = crate::fs::open_regular(&path)?;
        let mut reader = digest::HashingReader::new(file, f.size);
        let mut bytes = Vec::with_capacity(usize::try_from(f.size).unwrap_or(0));
        reader.read_to_end(&mut bytes).map_err(crate::fs::io_err("read", &path))?;
        reader.finish().check(&path, f.size, &f.sha256)?;
        Ok(bytes)
    }
}

/// Reads the three signature files and checks the signature and chain, without hashing the
/// folder's files. Returns the manifest, the chain and the manifest's bytes.
pub fn verify_signature(
    dir: &Path,
    trust: &Trust,
    now: SystemTime,
) -> Result<(Manifest, Vec<Cert>)> {
    let read = |name: &'static str, cap: u64| -> Result<Vec<u8>> {
        crate::fs::read_optional(&dir.join(name), cap)?
            .ok_or_else(|| Error::NotSigned { dir: dir.to_path_buf(), what: name })
    };
    let signed = SignatureFiles {
        manifest: read(MANIFEST_FILE, MAX_MANIFEST_BYTES)?,
        signature: read(SIGNATURE_FILE, MAX_SIGNATURE_BYTES)?,
        chain: read(PUBLISHER_FILE, pki::MAX_PEM_BYTES)?,
    };
    signed.verify(dir, trust, now)
}

/// The three files that sign a folder, as bytes (from a folder or the head of a bundle).
#[derive(Debug, Clone, Default)]
pub struct SignatureFiles {
    /// `manifest.json`.
    pub manifest: Vec<u8>,
    /// `manifest.sig`.
    pub signature: Vec<u8>,
    /// `publisher.pem`.
    pub chain: Vec<u8>,
}

impl SignatureFiles {
    /// Parses the manifest and checks the chain against `trust` and the signature over the
    /// manifest's exact bytes. `dir` names the files in errors.
    pub fn verify(
        &self,
        dir: &Path,
        trust: &Trust,
        now: SystemTime,
    ) -> Result<(Manifest, Vec<Cert>)> {
        let manifest_path = dir.join(MANIFEST_FILE);
        let manifest = Manifest::parse(&self.manifest, &manifest_path)?;
        let chain = Cert::parse_pem(&self.chain, &dir.join(PUBLISHER_FILE))?;
        pki::verify_code_signing_chain(&chain, trust, now, &dir.join(PUBLISHER_FILE))?;
        pki::verify_signature(&chain[0], &self.manifest, &self.signature, &manifest_path)?;
        Ok((manifest, chain))
    }

    /// Sets one file by its name; `false` for a name that is not a signature file.
    pub fn set(&mut self, name: &str, bytes: Vec<u8>) -> bool {
        match name {
            MANIFEST_FILE => self.manifest = bytes,
            SIGNATURE_FILE => self.signature = bytes,
            PUBLISHER_FILE => self.chain = bytes,
            _ => return false,
        }
        true
    }
}

fn file_kind(name: &str, path: &Path) -> &'static str {
    use std::os::unix::fs::PermissionsExt;
    let lower = name.to_ascii_lowercase();
    if lower.ends_with(".ini") {
        return "a settings file";
    }
    let exec_bit =
        std::fs::metadata(path).map(|m| m.permissions().mode() & 0o111 != 0).unwrap_or(false);
    let mut magic = [0u8; 4];
    let elf = File::open(path).and_then(|mut f| f.read_exact(&mut magic)).is_ok()
        && (&magic == b"\x7fELF" || magic.starts_with(b"#!"));
    if elf || exec_bit || CLIENT_PROGRAMS.iter().any(|p| name.starts_with(&format!("{p}_"))) {
        "an executable"
    } else {
        "a file"
    }
}

/// Lists every non-hidden file under `dir` (relative, `/`-separated). Symlinks and special
/// files are refused: a signed folder holds only regular files and folders.
fn list_files(dir: &Path) -> Result<BTreeMap<String, PathBuf>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![(dir.to_path_buf(), String::new())];
    while let Some((abs, rel)) = stack.pop() {
        let entries = std::fs::read_dir(&abs).map_err(crate::fs::io_err("list", &abs))?;
        for e in entries {
            let e = e.map_err(crate::fs::io_err("list", &abs))?;
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') {
                continue;
            }
            let rel_path = if rel.is_empty() { name.clone() } else { format!("{rel}/{name}") };
            let ft = e.file_type().map_err(crate::fs::io_err("inspect", &e.path()))?;
            if ft.is_dir() {
                stack.push((e.path(), rel_path));
            } else if ft.is_file() {
                out.insert(rel_path, e.path());
            } else {
                return Err(Error::UnsafePath {
                    path: rel_path,
                    reason: "symlinks and special files are not allowed in a signed folder".into(),
                });
            }
            if out.len() > MAX_FILES + 3 {
                return Err(Error::UnexpectedFile {
                    path: abs.clone(),
                    kind: "more files than a manifest may list",
                });
            }
        }
    }
    Ok(out)
}

/// Verifies a signed folder completely: signature, chain to `trust`'s roots with the
/// codeSigning usage, valid dates at `now` and nothing revoked or disallowed, then every listed file's size and SHA-256, and that no
/// unlisted file is present. Nothing is written.
pub fn verify_folder(dir: &Path, trust: &Trust, now: SystemTime) -> Result<VerifiedFolder> {
    let (manifest, chain) = verify_signature(dir, trust, now)?;
    let mut present = list_files(dir)?;
    for name in [MANIFEST_FILE, SIGNATURE_FILE, PUBLISHER_FILE] {
        present.remove(name);
    }
    for f in &manifest.files {
        let Some(path) = present.remove(&f.path) else {
            return Err(Error::MissingFile { path: dir.join(&f.path) });
        };
        digest::hash_file(&path, f.size)?.check(&path, f.size, &f.sha256)?;
    }
    if let Some((name, path)) = present.into_iter().next() {
        let kind = file_kind(&name, &path);
        return Err(Error::UnexpectedFile { path, kind });
    }
    let publisher = chain[0].clone();
    Ok(VerifiedFolder { dir: dir.to_path_buf(), manifest, publisher, chain })
}

/// What to sign a folder as.
#[derive(Debug, Clone)]
pub struct SignRequest {
    /// What the folder is.
    pub kind: PackageKind,
    /// Its name.
    pub name: String,
    /// Its version.
    pub version: ClientVersion,
    /// Platforms it has binaries for.
    pub platforms: Vec<Platform>,
    /// Kind-specific metadata.
    pub metadata: Option<serde_json::Value>,
    /// The programs a device may run from it.
    pub programs: Vec<SignedProgram>,
    /// When it is signed.
    pub now: SystemTime,
}

/// Signs a folder on the publisher's side: hashes every non-hidden file (files with an execute
/// bit are marked executable), writes `manifest.json`, `publisher.pem` (the chain, publisher
/// first) and `manifest.sig`. Returns the manifest.
pub fn sign_folder(
    dir: &Path,
    req: &SignRequest,
    key_pem: &[u8],
    key_path: &Path,
    chain: &[Cert],
) -> Result<Manifest> {
    use std::os::unix::fs::PermissionsExt;
    if chain.is_empty() {
        return Err(Error::BadCertificate {
            path: key_path.to_path_buf(),
            reason: "no publisher certificate to sign with".into(),
        });
    }
    let mut files = Vec::new();
    for name in [MANIFEST_FILE, SIGNATURE_FILE, PUBLISHER_FILE] {
        crate::fs::remove_file(&dir.join(name))?;
    }
    for (rel, path) in list_files(dir)? {
        check_relative_path(&rel)?;
        let meta = std::fs::metadata(&path).map_err(crate::fs::io_err("inspect", &path))?;
        let hashed = digest::hash_file(&path, meta.len())?;
        files.push(FileEntry {
            path: rel,
            size: hashed.size,
            sha256: hashed.sha256,
            executable: meta.permissions().mode() & 0o111 != 0,
        });
    }
    let mut platforms = req.platforms.clone();
    platforms.sort_unstable();
    platforms.dedup();
    // Client deployments carry no programs and keep the first format, which every released
    // client reads: an old client can still verify (and install) its successor.
    let format = if req.kind == PackageKind::ClientDeployment && req.programs.is_empty() {
        FORMAT_V1
    } else {
        FORMAT
    };
    let manifest = Manifest {
        format: format.into(),
        kind: req.kind,
        name: req.name.clone(),
        version: req.version,
        platforms,
        created: crate::clock::rfc3339(req.now),
        files,
        programs: req.programs.clone(),
        metadata: req.metadata.clone(),
    };
    let bytes = manifest.to_json()?;
    // Check what we are about to sign the way a device will.
    Manifest::parse(&bytes, &dir.join(MANIFEST_FILE))?;
    let signature = pki::sign(key_pem, &bytes, key_path)?;
    pki::verify_signature(&chain[0], &bytes, &signature, key_path)?;
    let chain_pem: String = chain.iter().map(Cert::to_pem).collect();
    crate::fs::write_atomic(&dir.join(MANIFEST_FILE), &bytes, crate::fs::MODE_PUBLIC)?;
    crate::fs::write_atomic(
        &dir.join(PUBLISHER_FILE),
        chain_pem.as_bytes(),
        crate::fs::MODE_PUBLIC,
    )?;
    crate::fs::write_atomic(&dir.join(SIGNATURE_FILE), &signature, crate::fs::MODE_PUBLIC)?;
    Ok(manifest)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn entry(path: &str, exec: bool) -> FileEntry {
        FileEntry { path: path.into(), size: 1, sha256: "a".repeat(64), executable: exec }
    }

    fn manifest(files: Vec<FileEntry>) -> Manifest {
        Manifest {
            format: FORMAT.into(),
            kind: PackageKind::SoftwareDistribution,
            name: "pkg".into(),
            version: ClientVersion::new(1, 0, 0, 0),
            platforms: vec![],
            created: "2026-11-24T13:20:01Z".into(),
            files,
            programs: vec![],
            metadata: None,
        }
    }

    fn parse(m: &Manifest) -> Result<Manifest> {
        Manifest::parse(&m.to_json().unwrap(), Path::new("manifest.json"))
    }

    #[test]
    fn round_trips() {
        let m = manifest(vec![entry("a", false), entry("dir/b", true)]);
        assert_eq!(parse(&m).unwrap(), m);
    }

    #[test]
    fn refuses_unsafe_paths() {
        for bad in
            ["", "/etc/passwd", "../x", "a/../b", "a//b", "./a", "a\\b", ".hidden", "a/.b", "a\nb"]
        {
            let err = parse(&manifest(vec![entry(bad, false)])).unwrap_err();
            assert!(matches!(err, Error::UnsafePath { .. }), "{bad:?}: {err}");
        }
    }

    #[test]
    fn refuses_bad_structure() {
        let cases: Vec<(Manifest, &str)> = vec![
            (manifest(vec![entry("a", false), entry("a", false)]), "listed twice"),
            (
                manifest(vec![entry("a", false), entry("a/b", false)]),
                "both as a file and as a folder",
            ),
            (manifest(vec![entry("manifest.sig", false)]), "cannot list itself"),
            (
                manifest(vec![FileEntry { sha256: "XYZ".into(), ..entry("a", false) }]),
                "64 lowercase hex",
            ),
            (manifest(vec![FileEntry { size: MAX_FILE_SIZE + 1, ..entry("a", false) }]), "allowed"),
            (Manifest { format: "dm-manifest/3".into(), ..manifest(vec![]) }, "too old"),
            (
                Manifest {
                    format: FORMAT_V1.into(),
                    programs: vec![crate::testing::setup_program()],
                    ..manifest(vec![entry("setup.sh", true)])
                },
                "has no programs",
            ),
            (
                Manifest { programs: vec![crate::testing::setup_program()], ..manifest(vec![]) },
                "setup.sh is not an executable file of the package",
            ),
            (Manifest { name: String::new(), ..manifest(vec![]) }, "name"),
            (
                Manifest { kind: PackageKind::ClientDeployment, ..manifest(vec![]) },
                "at least one platform",
            ),
            (
                Manifest {
                    kind: PackageKind::ClientDeployment,
                    platforms: vec![Platform::parse("linux-aarch64").unwrap()],
                    ..manifest(vec![entry("dminstaller_linux-aarch64", true)])
                },
                "does not list the executable dmclientsetup_linux-aarch64",
            ),
        ];
        for (m, want) in cases {
            let err = parse(&m).unwrap_err().to_string();
            assert!(err.contains(want), "want {want:?} in {err}");
        }
    }

    #[test]
    fn old_format_packages_are_refused_and_old_client_deployments_are_not() {
        let old = Manifest { format: FORMAT_V1.into(), ..manifest(vec![]) };
        let m = parse(&old).unwrap();
        let err = m.require_signed_programs(Path::new("m")).unwrap_err();
        assert_eq!(err.code(), crate::StatusCode::DM_E_MANIFEST_TOO_OLD);
        assert!(err.to_string().contains("re-sign"), "{err}");
        let deployment = Manifest { kind: PackageKind::ClientDeployment, ..old };
        deployment.require_signed_programs(Path::new("m")).unwrap();
        let new = Manifest { programs: vec![], ..manifest(vec![]) };
        new.require_signed_programs(Path::new("m")).unwrap();
    }

    #[test]
    fn truncated_and_unknown_fields_are_malformed() {
        let json = manifest(vec![entry("a", false)]).to_json().unwrap();
        for cut in [0, 1, json.len() / 2, json.len() - 3] {
            let err = Manifest::parse(&json[..cut], Path::new("m")).unwrap_err();
            assert!(matches!(err, Error::MalformedManifest { .. }), "{err}");
        }
        let extra = String::from_utf8(json).unwrap().replacen('{', "{\"sneaky\": 1,", 1);
        assert!(matches!(
            Manifest::parse(extra.as_bytes(), Path::new("m")),
            Err(Error::MalformedManifest { .. })
        ));
    }

    #[test]
    fn hash_file_refuses_more_than_declared() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        std::fs::write(&p, b"hello").unwrap();
        let h = digest::hash_file(&p, 5).unwrap();
        assert_eq!((h.size, h.sha256), (5, pki::sha256_hex(b"hello")));
        let err = digest::hash_file(&p, 4).unwrap().check(&p, 4, "x").unwrap_err();
        assert!(matches!(err, Error::HashMismatch { what: "size", .. }), "{err}");
    }

    mod signed {
        use super::*;
        use crate::testing::{Signed, signed_folder as signed};
        use std::time::Duration;

        type Fixture = Signed;

        fn signed_folder() -> Fixture {
            let f = signed(vec![crate::testing::setup_program()]);
            let m = verify(&f).unwrap().manifest;
            assert_eq!(m.files.len(), 3);
            assert!(
                m.file("setup.sh").unwrap().executable
                    && !m.file("docs/readme.txt").unwrap().executable
            );
            assert_eq!(m.format, FORMAT);
            assert_eq!(m.program("install").unwrap().command, ["setup.sh", "--quiet"]);
            f
        }

        fn verify(f: &Fixture) -> Result<VerifiedFolder> {
            verify_folder(&f.dir, &f.trust, f.now)
        }

        #[test]
        fn a_signed_folder_verifies() {
            let f = signed_folder();
            let v = verify(&f).unwrap();
            assert!(v.publisher.subject().contains("Publisher"));
            // Hidden files (a card's litter) are ignored.
            std::fs::write(f.dir.join(".Trashes"), b"").unwrap();
            verify(&f).unwrap();
        }

        #[test]
        fn tampered_manifest_is_a_bad_signature() {
            let f = signed_folder();
            let p = f.dir.join(MANIFEST_FILE);
            let text = std::fs::read_to_string(&p).unwrap().replace("\"tools\"", "\"toolz\"");
            std::fs::write(&p, text).unwrap();
            assert!(matches!(verify(&f), Err(Error::BadSignature { .. })));
        }

        #[test]
        fn truncated_manifest_is_malformed() {
            let f = signed_folder();
            let p = f.dir.join(MANIFEST_FILE);
            let bytes = std::fs::read(&p).unwrap();
            std::fs::write(&p, &bytes[..bytes.len() / 2]).unwrap();
            assert!(matches!(verify(&f), Err(Error::MalformedManifest { .. })));
        }

        #[test]
        fn changed_missing_and_extra_files() {
            let f = signed_folder();
            std::fs::write(f.dir.join("docs/readme.txt"), b"HELLO").unwrap();
            assert!(matches!(verify(&f), Err(Error::HashMismatch { what: "SHA-256", .. })));
            std::fs::write(f.dir.join("docs/readme.txt"), b"hello!").unwrap();
            assert!(matches!(verify(&f), Err(Error::HashMismatch { what: "size", .. })));
            std::fs::remove_file(f.dir.join("docs/readme.txt")).unwrap();
            assert!(matches!(verify(&f), Err(Error::MissingFile { .. })));
            std::fs::write(f.dir.join("docs/readme.txt"), b"hello").unwrap();
            verify(&f).unwrap();

            std::fs::write(f.dir.join("dmsvc_linux-x86_64"), b"\x7fELF....").unwrap();
            assert!(matches!(verify(&f), Err(Error::UnexpectedFile { kind: "an executable", .. })));
            std::fs::remove_file(f.dir.join("dmsvc_linux-x86_64")).unwrap();
            std::fs::write(f.dir.join("DMCommonInstaller.ini"), b"[Installation]\n").unwrap();
            assert!(matches!(
                verify(&f),
                Err(Error::UnexpectedFile { kind: "a settings file", .. })
            ));
            std::fs::remove_file(f.dir.join("DMCommonInstaller.ini")).unwrap();
            std::os::unix::fs::symlink("/etc/passwd", f.dir.join("docs/link")).unwrap();
            assert!(matches!(verify(&f), Err(Error::UnsafePath { .. })));
        }

        #[test]
        fn unsigned_and_untrusted() {
            let f = signed_folder();
            let other = signed_folder();
            assert!(matches!(
                verify_folder(&f.dir, &other.trust, f.now),
                Err(Error::UntrustedPublisher { .. })
            ));
            assert!(matches!(
                verify_folder(&f.dir, &f.trust, f.now + Duration::from_secs(2 * 86_400)),
                Err(Error::CertificateExpired { .. })
            ));
            std::fs::remove_file(f.dir.join(SIGNATURE_FILE)).unwrap();
            assert!(matches!(verify(&f), Err(Error::NotSigned { what: SIGNATURE_FILE, .. })));
        }
    }

    proptest! {
        #[test]
        fn parser_never_panics_on_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
            let _ = Manifest::parse(&bytes, Path::new("m"));
        }

        #[test]
        fn parser_never_panics_on_json_shaped_input(
            paths in proptest::collection::vec("[a-z./\\\\]{0,12}", 0..6),
            sizes in proptest::collection::vec(any::<u64>(), 0..6),
            version in "[0-9.]{0,12}",
            kind in "(client-deployment|software-distribution|configuration|x)",
            platforms in proptest::collection::vec("linux-[a-z0-9]{0,6}", 0..3),
        ) {
            let files: Vec<_> = paths.iter().zip(sizes.iter().chain(std::iter::repeat(&0))).map(|(p, s)| {
                serde_json::json!({"path": p, "size": s, "sha256": "0".repeat(64), "executable": true})
            }).collect();
            let doc = serde_json::json!({
                "format": FORMAT, "kind": kind, "name": "n", "version": version,
                "platforms": platforms, "created": "x", "files": files,
            });
            let _ = Manifest::parse(doc.to_string().as_bytes(), Path::new("m"));
        }

        #[test]
        fn accepted_paths_never_escape(p in "[a-z./]{1,20}") {
            if check_relative_path(&p).is_ok() {
                let joined = Path::new("/base").join(&p);
                prop_assert!(joined.starts_with("/base"));
                prop_assert!(!joined.components().any(|c| matches!(c, std::path::Component::ParentDir)));
            }
        }
    }
}
