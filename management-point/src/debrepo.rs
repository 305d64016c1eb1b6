//! Debian repositories as `dmmp update import` reads them (docs/software-updates.md): the
//! release file verified with `gpgv` against the keyring the administrator names (the verifier
//! apt itself uses), only the text the signature covers read, the release file's freshness
//! checked (`Valid-Until`, a `Date` never older than the one imported before), each package
//! index checked against the SHA-256 the release file gives, and each `.deb` copied only when
//! its size and SHA-256 match its index.
//!
//! A repository is a local folder (`dists/`, `pool/`), as `apt-ftparchive`, `reprepro` or a
//! mirror lays it out.

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use dm_shared::debian::{self, Paragraphs};
use dm_shared::digest::HashingReader;
use dm_shared::files::check_relative_path;

use crate::error::{Error, Result};
use crate::model::updates::{RepoFile, Update};

/// The largest release file read.
const MAX_RELEASE: u64 = 16 << 20;
/// The largest package index read, compressed or not.
const MAX_INDEX: u64 = 1 << 30;
/// The largest `.deb` copied.
const MAX_DEB: u64 = 4 << 30;

/// A release file's fields, from the signed text only.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Release {
    /// `Origin`.
    pub origin: String,
    /// `Label`.
    pub label: String,
    /// `Suite`.
    pub suite: String,
    /// `Codename`.
    pub codename: String,
    /// `Date`, Unix seconds.
    pub date: Option<i64>,
    /// `Valid-Until`, Unix seconds.
    pub valid_until: Option<i64>,
    /// `Architectures`.
    pub architectures: Vec<String>,
    /// `Components`.
    pub components: Vec<String>,
    /// The `SHA256` list: path → (size, hash).
    pub sha256: HashMap<String, (u64, String)>,
}

impl Release {
    /// Whether its updates are security updates: the suite is `…-security` or the label
    /// says so (Debian's and Ubuntu's archives).
    pub fn is_security(&self) -> bool {
        self.suite.ends_with("-security")
            || self.codename.ends_with("-security")
            || self.label.to_ascii_lowercase().contains("security")
    }
}

/// Where a repository is: a folder, or an `https://` (or `http://`) URL. Over the network the
/// signature and the hashes are what make the bytes trustworthy, as for apt; every request
/// has deadlines and every read a cap.
#[derive(Debug, Clone)]
pub enum Location {
    /// The folder holding `dists/` and `pool/`.
    Dir(PathBuf),
    /// The URL of the folder holding `dists/` and `pool/`, and the client to fetch with.
    Url(String, ureq::Agent),
}

/// A repository being imported: where it is, and the suite.
#[derive(Debug, Clone)]
pub struct Source {
    /// Where it is.
    pub location: Location,
    /// The suite.
    pub suite: String,
}

/// Deadlines of a repository download: connecting, the answer's head, the whole transfer.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(60);
const TRANSFER_TIMEOUT: Duration = Duration::from_secs(3600);

impl Source {
    /// The repository at `source` (a folder, or an http(s) URL whose server certificate must
    /// chain to `ca`, PEM, or else to the system's roots in `/etc/ssl/certs`).
    pub fn new(source: &str, suite: &str, ca: Option<&Path>) -> Result<Source> {
        let location = if source.starts_with("https://") || source.starts_with("http://") {
            Location::Url(source.trim_end_matches('/').to_string(), http_agent(ca, false)?)
        } else {
            Location::Dir(PathBuf::from(source))
        };
        Ok(Source { location, suite: suite.to_string() })
    }

    /// Where it is, for messages and the catalog.
    pub fn display(&self) -> String {
        match &self.location {
            Location::Dir(d) => d.display().to_string(),
            Location::Url(u, _) => u.clone(),
        }
    }

    /// The path of the suite's file `name` (`InRelease`, `main/binary-arm64/Packages.gz`).
    pub fn dists(&self, name: &str) -> String {
        format!("dists/{}/{name}", self.suite)
    }

    /// Opens the file at `path` inside the repository (`path` confined: no `..`, not
    /// absolute). `None` when there is no such file.
    pub fn open(&self, path: &str) -> Result<Option<Box<dyn Read + Send>>> {
        check_relative_path(path)?;
        match &self.location {
            Location::Dir(d) => {
                let p = d.join(path);
                if !p.exists() {
                    return Ok(None);
                }
                Ok(Some(Box::new(dm_shared::fs::open_regular(&p)?)))
            }
            Location::Url(base, agent) => {
                let url = format!("{base}/{path}");
                match agent.get(&url).call() {
                    Ok(r) => Ok(Some(Box::new(r.into_body().into_reader()))),
                    Err(ureq::Error::StatusCode(404 | 410)) => Ok(None),
                    Err(e) => Err(Error::RepositoryHash {
                        file: url,
                        reason: format!("cannot fetch: {e}"),
                    }),
                }
            }
        }
    }

    /// Reads the file at `path` whole, at most `cap` bytes.
    pub fn read(&self, path: &str, cap: u64) -> Result<Option<Vec<u8>>> {
        let Some(r) = self.open(path)? else { return Ok(None) };
        let mut out = Vec::new();
        r.take(cap + 1)
            .read_to_end(&mut out)
            .map_err(|e| Error::RepositoryHash { file: path.to_string(), reason: e.to_string() })?;
        if out.len() as u64 > cap {
            return Err(Error::RepositoryHash {
                file: path.to_string(),
                reason: format!("larger than {cap} bytes"),
            });
        }
        Ok(Some(out))
    }

    fn need(&self, path: &str, cap: u64) -> Result<Vec<u8>> {
        self.read(path, cap)?
            .ok_or_else(|| Error::NotFound(format!("{path} in {}", self.display())))
    }
}

/// A TLS configuration (rustls, ring) trusting only `ca`'s PEM roots, or the system's.
pub(crate) fn tls_trusting(ca: Option<&Path>) -> Result<ureq::tls::TlsConfig> {
    use rustls_pki_types::pem::PemObject;
    let file =
        ca.map_or_else(|| PathBuf::from("/etc/ssl/certs/ca-certificates.crt"), Path::to_path_buf);
    let pem = dm_shared::fs::read_capped(&file, 16 << 20)?;
    let roots: Vec<ureq::tls::Certificate<'static>> =
        rustls_pki_types::CertificateDer::pem_slice_iter(&pem)
            .filter_map(|c| c.ok())
            .map(|c| ureq::tls::Certificate::from_der(c.as_ref()).to_owned())
            .collect();
    if roots.is_empty() {
        return Err(Error::Usage(format!("{}: no PEM certificate to trust", file.display())));
    }
    Ok(ureq::tls::TlsConfig::builder()
        .provider(ureq::tls::TlsProvider::Rustls)
        .unversioned_rustls_crypto_provider(std::sync::Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .root_certs(ureq::tls::RootCerts::new_with_certs(&roots))
        .build())
}

/// The HTTP client of a repository download (`api` false: three redirects, an error status is
/// an error) or of the management API (`api`: no redirect, an error status is an answer to
/// read): rustls with `ca`'s roots, or the system's.
pub(crate) fn http_agent(ca: Option<&Path>, api: bool) -> Result<ureq::Agent> {
    let tls = tls_trusting(ca)?;
    Ok(ureq::Agent::config_builder()
        .tls_config(tls)
        .timeout_connect(Some(CONNECT_TIMEOUT))
        .timeout_recv_response(Some(RESPONSE_TIMEOUT))
        .timeout_global(Some(TRANSFER_TIMEOUT))
        .max_redirects(if api { 0 } else { 3 })
        .http_status_as_error(!api)
        .build()
        .into())
}

/// A repository file as read: what it is, and its bytes.
pub type Fetched = (RepoFile, Vec<u8>);

/// What gpgv said of a signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// The text the signature covers.
    pub text: String,
    /// The fingerprint of the signing key (the primary key's, when gpgv names it).
    pub fingerprint: String,
}

/// Verifies the suite's release file with gpgv: `InRelease`, or `Release` with
/// `Release.gpg`, read once and verified as the very bytes kept. Returns the signed text, the
/// signer, and each file read. `keyring` is a binary OpenPGP keyring (`gpg --export`, or
/// Debian's `/usr/share/keyrings/*.gpg`).
pub fn verify_release(src: &Source, keyring: &Path) -> Result<(Verified, Vec<Fetched>)> {
    let keyring = std::path::absolute(keyring)
        .map_err(|e| Error::Usage(format!("{}: {e}", keyring.display())))?;
    if !keyring.is_file() {
        return Err(Error::Usage(format!("--keyring {}: no such file", keyring.display())));
    }
    let home = tempfile_dir()?;
    let inrelease = src.dists("InRelease");
    if let Some(bytes) = src.read(&inrelease, MAX_RELEASE)? {
        let file = home.path().join("InRelease");
        dm_shared::fs::write_atomic(&file, &bytes, 0o600)?;
        let v = gpgv(&home, &keyring, &inrelease, &[&file])?;
        return Ok((v, vec![(repo_file(&inrelease, &bytes), bytes)]));
    }
    let release = src.dists("Release");
    let sig = src.dists("Release.gpg");
    let release_bytes = src.need(&release, MAX_RELEASE).map_err(|_| {
        Error::NotFound(format!("{inrelease} (nor {release}) in {}", src.display()))
    })?;
    let sig_bytes = src.need(&sig, MAX_RELEASE)?;
    let (rf, sf) = (home.path().join("Release"), home.path().join("Release.gpg"));
    dm_shared::fs::write_atomic(&rf, &release_bytes, 0o600)?;
    dm_shared::fs::write_atomic(&sf, &sig_bytes, 0o600)?;
    let mut v = gpgv(&home, &keyring, &release, &[&sf, &rf])?;
    // A detached signature covers the file as it is.
    v.text = String::from_utf8_lossy(&release_bytes).into_owned();
    let files = vec![
        (repo_file(&release, &release_bytes), release_bytes),
        (repo_file(&sig, &sig_bytes), sig_bytes),
    ];
    Ok((v, files))
}

fn repo_file(path: &str, bytes: &[u8]) -> RepoFile {
    RepoFile {
        path: path.to_string(),
        size: bytes.len() as u64,
        sha256: dm_shared::pki::sha256_hex(bytes),
    }
}

/// Runs gpgv on `files` (a clearsigned file, or a signature and its file) with only
/// `keyring` trusted, in an empty home of its own. A good signature needs gpgv's success,
/// `GOODSIG` and `VALIDSIG`, and none of an expired or revoked key's or a bad signature's
/// status lines (apt's rule).
fn gpgv(home: &TempDir, keyring: &Path, name: &str, files: &[&Path]) -> Result<Verified> {
    let gnupg = home.path().join("gnupg");
    dm_shared::fs::create_dir_all(&gnupg, dm_shared::fs::MODE_DIR_PRIVATE)?;
    let out = Command::new("gpgv")
        .arg("--homedir")
        .arg(&gnupg)
        .args(["--status-fd", "2", "--output", "-", "--keyring"])
        .arg(keyring)
        .args(files)
        .env("LC_ALL", "C")
        .output()
        .map_err(|e| Error::ReleaseSignature {
            file: name.to_string(),
            keyring: keyring.to_path_buf(),
            reason: format!("cannot run gpgv ({e}); install the gpgv package"),
        })?;
    let status = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = status.lines().filter_map(|l| l.strip_prefix("[GNUPG:] ")).collect();
    let has = |w: &str| lines.iter().any(|l| l.split(' ').next() == Some(w));
    let fingerprint = lines.iter().find_map(|l| l.strip_prefix("VALIDSIG ")).and_then(|rest| {
        let f: Vec<&str> = rest.split(' ').collect();
        // VALIDSIG <fpr> … <primary-key-fpr> as the tenth field, when given.
        f.get(9).or(f.first()).map(|s| s.to_string())
    });
    let bad = ["BADSIG", "EXPKEYSIG", "REVKEYSIG", "EXPSIG", "ERRSIG", "NO_PUBKEY"];
    let refused = bad.iter().find(|w| has(w));
    match (out.status.success(), has("GOODSIG"), fingerprint, refused) {
        (true, true, Some(fingerprint), None) => {
            Ok(Verified { text: String::from_utf8_lossy(&out.stdout).into_owned(), fingerprint })
        }
        (_, _, _, refused) => {
            let said: Vec<&str> = status
                .lines()
                .filter(|l| l.starts_with("gpgv:"))
                .map(|l| l.trim_start_matches("gpgv: ").trim())
                .collect();
            Err(Error::ReleaseSignature {
                file: name.to_string(),
                keyring: keyring.to_path_buf(),
                reason: match refused {
                    Some(w) => format!("{w}: {}", said.join("; ")),
                    None if said.is_empty() => format!("gpgv failed ({})", out.status),
                    None => said.join("; "),
                },
            })
        }
    }
}

/// A private empty folder, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn tempfile_dir() -> Result<TempDir> {
    let name = format!(
        "dmmp-gpgv-{}-{}",
        std::process::id(),
        crate::random::hex(8, "a gpgv home folder name")?
    );
    let dir = std::env::temp_dir().join(name);
    dm_shared::fs::create_dir_all(&dir, dm_shared::fs::MODE_DIR_PRIVATE)?;
    Ok(TempDir(dir))
}

/// Reads a release file's fields from its signed text.
pub fn parse_release(text: &str) -> Release {
    let mut r = Release::default();
    let mut in_sha256 = false;
    for line in text.lines() {
        if line.starts_with([' ', '\t']) {
            if in_sha256 {
                let f: Vec<&str> = line.split_whitespace().collect();
                if let [hash, size, path] = f[..] {
                    if let Ok(size) = size.parse() {
                        r.sha256.insert(path.to_string(), (size, hash.to_ascii_lowercase()));
                    }
                }
            }
            continue;
        }
        in_sha256 = false;
        let Some((name, value)) = line.split_once(':') else { continue };
        let value = value.trim();
        match name {
            "Origin" => r.origin = value.into(),
            "Label" => r.label = value.into(),
            "Suite" => r.suite = value.into(),
            "Codename" => r.codename = value.into(),
            "Date" => r.date = parse_date(value),
            "Valid-Until" => r.valid_until = parse_date(value),
            "Architectures" => {
                r.architectures = value.split_whitespace().map(String::from).collect()
            }
            "Components" => r.components = value.split_whitespace().map(String::from).collect(),
            "SHA256" => in_sha256 = true,
            _ => {}
        }
    }
    r
}

/// A release file's date (`Sat, 10 Aug 2024 09:05:06 UTC`, RFC 2822 with `UTC`, `GMT` or a
/// numeric zone), in Unix seconds.
pub fn parse_date(s: &str) -> Option<i64> {
    let s = s.split_once(", ").map_or(s, |(_, rest)| rest);
    let f: Vec<&str> = s.split_whitespace().collect();
    let [day, month, year, time, zone] = f[..] else { return None };
    let months =
        ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
    let month = months.iter().position(|m| *m == month)? as u32 + 1;
    let mut hms = time.split(':').map(|x| x.parse::<u32>());
    let (h, m, sec) = (hms.next()?.ok()?, hms.next()?.ok()?, hms.next()?.ok()?);
    let offset = match zone {
        "UTC" | "GMT" | "Z" => 0,
        z if z.len() == 5 && (z.starts_with('+') || z.starts_with('-')) => {
            let n: i64 = z[1..].parse().ok()?;
            let secs = (n / 100) * 3600 + (n % 100) * 60;
            if z.starts_with('-') { -secs } else { secs }
        }
        _ => return None,
    };
    let text = format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        year.parse::<u32>().ok()?,
        month,
        day.parse::<u32>().ok()?,
        h,
        m,
        sec
    );
    let t = dm_shared::clock::parse_rfc3339(&text)?;
    Some(dm_shared::clock::unix_secs(t) as i64 - offset)
}

/// The index of `component` and `arch` the release file lists: `Packages.gz`, else
/// `Packages`. Returns its path, size and SHA-256.
pub fn index_of(src: &Source, release: &Release, component: &str, arch: &str) -> Option<RepoFile> {
    ["Packages.gz", "Packages"].iter().find_map(|name| {
        let rel = format!("{component}/binary-{arch}/{name}");
        release.sha256.get(&rel).map(|(size, sha256)| RepoFile {
            path: src.dists(&rel),
            size: *size,
            sha256: sha256.clone(),
        })
    })
}

/// Reads an index the release file lists, checking its size and SHA-256 while reading.
/// Returns it as it is and uncompressed.
pub fn read_index(src: &Source, f: &RepoFile) -> Result<(Vec<u8>, Vec<u8>)> {
    let file = src
        .open(&f.path)?
        .ok_or_else(|| Error::NotFound(format!("{} in {}", f.path, src.display())))?;
    let mut r = HashingReader::new(file, f.size.min(MAX_INDEX));
    let mut raw = Vec::new();
    r.read_to_end(&mut raw)
        .map_err(|e| Error::RepositoryHash { file: f.path.clone(), reason: e.to_string() })?;
    let h = r.finish();
    if h.size != f.size || h.sha256 != f.sha256 {
        return Err(Error::RepositoryHash {
            file: f.path.clone(),
            reason: format!(
                "{} bytes with SHA-256 {}, but the signed release file says {} bytes with SHA-256 {}",
                h.size, h.sha256, f.size, f.sha256
            ),
        });
    }
    if !f.path.ends_with(".gz") {
        return Ok((raw.clone(), raw));
    }
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(&raw[..]).take(MAX_INDEX + 1).read_to_end(&mut out).map_err(
        |e| Error::RepositoryHash { file: f.path.clone(), reason: format!("not gzip: {e}") },
    )?;
    if out.len() as u64 > MAX_INDEX {
        return Err(Error::RepositoryHash {
            file: f.path.clone(),
            reason: format!("larger than {MAX_INDEX} bytes uncompressed"),
        });
    }
    Ok((raw, out))
}

/// The updates an index lists (ids, repository, approval and times left for the caller), and
/// how many of its entries were unusable (each logged).
pub fn parse_index(text: &[u8], index: &str, security: bool) -> (Vec<Update>, usize) {
    let fields = &[
        "Package",
        "Version",
        "Architecture",
        "Source",
        "Section",
        "Priority",
        "Size",
        "SHA256",
        "Filename",
    ];
    let mut p = Paragraphs::new(text, fields);
    let (mut out, mut bad) = (Vec::new(), 0);
    while let Ok(Some(v)) = p.next_paragraph() {
        let get = |i: usize| v[i].clone().unwrap_or_default();
        let package = get(0);
        let u = Update {
            id: 0,
            repository_id: 0,
            version: get(1),
            arch: get(2),
            source: get(3).split_whitespace().next().unwrap_or(&package).to_string(),
            section: get(4),
            priority: get(5),
            size: get(6).parse().unwrap_or(u64::MAX),
            sha256: get(7).to_ascii_lowercase(),
            filename: get(8),
            security,
            superseded_by: None,
            approved: None,
            approved_by: None,
            added: 0,
            package,
        };
        match check_entry(&u) {
            Ok(()) => out.push(u),
            Err(why) => {
                bad += 1;
                log::warn!(
                    "{index}: entry {:?} skipped: {why}",
                    crate::printable::printable(&u.package)
                );
            }
        }
    }
    (out, bad)
}

fn check_entry(u: &Update) -> std::result::Result<(), String> {
    let name_ok = u.package.len() >= 2
        && u.package
            .bytes()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || b".+-".contains(&c));
    if !name_ok {
        return Err("not a Debian package name".into());
    }
    if !debian::is_valid_version(&u.version) {
        return Err(format!("version {:?} is not a Debian version", u.version));
    }
    if u.arch.is_empty() || !u.arch.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-') {
        return Err(format!("architecture {:?}", u.arch));
    }
    if u.size > MAX_DEB {
        return Err("no usable Size".into());
    }
    if u.sha256.len() != 64 || !u.sha256.bytes().all(|c| c.is_ascii_hexdigit()) {
        return Err("no usable SHA256".into());
    }
    check_relative_path(&u.filename).map_err(|e| format!("Filename: {e}"))?;
    Ok(())
}

/// Copies a `.deb` from the repository to `dest` (atomically, 0644), checking its size and
/// SHA-256 against its index while copying.
pub fn copy_deb(src: &Source, u: &Update, dest: &Path) -> Result<()> {
    let file = src
        .open(&u.filename)?
        .ok_or_else(|| Error::NotFound(format!("{} in {}", u.filename, src.display())))?;
    if let Some(dir) = dest.parent() {
        dm_shared::fs::create_dir_all(dir, 0o755)?;
    }
    let mut r = HashingReader::new(file, u.size);
    let mut out = dm_shared::fs::AtomicFile::create(dest, 0o644)?;
    std::io::copy(&mut r, &mut out)
        .map_err(|e| Error::RepositoryHash { file: u.filename.clone(), reason: e.to_string() })?;
    let h = r.finish();
    if h.size != u.size || h.sha256 != u.sha256 {
        return Err(Error::RepositoryHash {
            file: u.filename.clone(),
            reason: format!(
                "{} bytes with SHA-256 {}, but the signed index says {} bytes with SHA-256 {}",
                h.size, h.sha256, u.size, u.sha256
            ),
        });
    }
    out.commit()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn release_fields_and_dates() {
        let text = "Origin: Debian\nLabel: Debian-Security\nSuite: stable-security\nCodename: bookworm-security\n\
Date: Sat, 10 Aug 2024 09:05:06 UTC\nValid-Until: Sat, 17 Aug 2024 09:05:06 +0100\nArchitectures: amd64 arm64\nComponents: main\n\
SHA256:\n 0123 12 main/binary-arm64/Packages\n abcd 5 main/binary-arm64/Packages.gz\nAcquire-By-Hash: yes\n";
        let r = parse_release(text);
        assert_eq!(r.codename, "bookworm-security");
        assert!(r.is_security());
        assert_eq!(r.date, Some(1_723_280_706));
        assert_eq!(r.valid_until, Some(1_723_280_706 + 7 * 86_400 - 3600));
        assert_eq!(r.sha256["main/binary-arm64/Packages.gz"], (5, "abcd".to_string()));
        assert_eq!(r.architectures, vec!["amd64", "arm64"]);
        assert_eq!(parse_date("tomorrow"), None);
    }

    #[test]
    fn index_entries_that_could_harm_are_skipped() {
        let idx = b"Package: good\nVersion: 1.0-1\nArchitecture: arm64\nSize: 10\nSHA256: 0000000000000000000000000000000000000000000000000000000000000000\nFilename: pool/main/g/good/good_1.0-1_arm64.deb\nSource: goodsrc (1.0)\n\n\
Package: evil\nVersion: 1.0\nArchitecture: arm64\nSize: 10\nSHA256: 0000000000000000000000000000000000000000000000000000000000000000\nFilename: ../../etc/passwd\n\n\
Package: Bad Name\nVersion: 1\nArchitecture: all\nSize: 1\nSHA256: 0000000000000000000000000000000000000000000000000000000000000000\nFilename: pool/x.deb\n";
        let (u, bad) = parse_index(idx, "Packages", false);
        assert_eq!(bad, 2);
        assert_eq!(u.len(), 1);
        assert_eq!(u[0].source, "goodsrc");
        assert!(check_relative_path("pool/a/b.deb").is_ok());
        for p in ["/etc/x", "a/../b", "a//b", "", "./a"] {
            assert!(check_relative_path(p).is_err(), "{p}");
        }
    }
}
