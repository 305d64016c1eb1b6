//! The bodies of the fuzz targets of this crate's parsers (`fuzz/`, `fuzz/README.md`), written
//! once: each `fuzz/fuzz_targets/<name>.rs` calls one of these functions, and so does the
//! replay of the committed corpora in the fast tier ([`replay`]).
//!
//! Each body feeds bytes a memory card, a network or a management point controls to a public
//! entry point and must return without panicking, whatever the bytes; where it is cheap it also
//! checks a property (what was parsed, written out again, parses to the same value). A panic is
//! a finding. Signatures are checked against the fixed code-signing PKI in `fuzz/fixtures/`
//! at the fixed time [`now`], so corpus files signed by it reach past the signature checks.
//!
//! Compiled for this crate's tests and with the `fuzzing` feature only.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, SystemTime};

use crate::config_item::{self, ConfigItem, Rule};
use crate::manifest::{Manifest, SignatureFiles};
use crate::pki::{self, Cert, Crl, Trust};
use crate::{Platform, Settings, bundle};

/// The code-signing root of the fixture PKI (`fuzz/fixtures/README.md` says how it was made).
const ROOT_PEM: &[u8] =
    include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/../fuzz/fixtures/codesign-root.pem"));
/// The fixture publisher's chain (publisher, then root).
const PUBLISHER_PEM: &[u8] =
    include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/../fuzz/fixtures/publisher.pem"));

/// The time every target checks validity at: 2030-03-17, inside the fixtures' validity
/// (2020 to 2100), so a replay gives the same answer in any year.
pub const NOW_UNIX: u64 = 1_900_000_000;

/// [`NOW_UNIX`] as a time.
pub fn now() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(NOW_UNIX)
}

fn fixture_certs(pem: &[u8], name: &str) -> Vec<Cert> {
    match Cert::parse_pem(pem, Path::new(name)) {
        Ok(c) => c,
        Err(e) => panic!("the fuzz fixture {name} does not parse: {e}"),
    }
}

/// Trust in the fixture root alone.
pub fn trust() -> &'static Trust {
    static TRUST: OnceLock<Trust> = OnceLock::new();
    TRUST.get_or_init(|| Trust::roots(fixture_certs(ROOT_PEM, "codesign-root.pem")))
}

fn publisher_chain() -> &'static [Cert] {
    static CHAIN: OnceLock<Vec<Cert>> = OnceLock::new();
    CHAIN.get_or_init(|| fixture_certs(PUBLISHER_PEM, "publisher.pem"))
}

/// Splits one fuzz input into `N` parts: each part but the last is preceded by its length, a
/// little-endian `u32` (cut to what is left); the last part is the rest. [`join_parts`] is
/// its inverse.
pub fn split_parts<const N: usize>(mut data: &[u8]) -> [&[u8]; N] {
    let mut parts = [&data[..0]; N];
    for (i, part) in parts.iter_mut().enumerate() {
        if i + 1 == N {
            *part = data;
            break;
        }
        let (len, rest) = match data.split_first_chunk::<4>() {
            Some((len, rest)) => (u32::from_le_bytes(*len) as usize, rest),
            None => (0, &data[data.len()..]),
        };
        let (head, tail) = rest.split_at(len.min(rest.len()));
        *part = head;
        data = tail;
    }
    parts
}

/// Joins parts into one fuzz input the way [`split_parts`] reads them (for seeds).
pub fn join_parts(parts: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::new();
    for (i, p) in parts.iter().enumerate() {
        if i + 1 < parts.len() {
            let len = u32::try_from(p.len()).unwrap_or(u32::MAX);
            out.extend_from_slice(&len.to_le_bytes());
        }
        out.extend_from_slice(p);
    }
    out
}

/// `manifest.json`: [`Manifest::parse`]; an accepted manifest written out again
/// ([`Manifest::to_json`]) parses to the same manifest, and its configuration items, programs
/// and bundle name are read.
///
/// The free-form `metadata` is compared by what devices read of it, its configuration items:
/// serde_json (without its `float_roundtrip` feature) may read a float one unit in the last
/// place off what it wrote (`fuzz/regressions/manifest/`), and no device reads a float.
pub fn manifest(data: &[u8]) {
    let path = Path::new("manifest.json");
    let Ok(m) = Manifest::parse(data, path) else { return };
    let json = match m.to_json() {
        Ok(j) => j,
        Err(e) => panic!("an accepted manifest cannot be written: {e}"),
    };
    let again = match Manifest::parse(&json, path) {
        Ok(again) => again,
        Err(e) => panic!("an accepted manifest, written out, is refused: {e}"),
    };
    let items = config_item::items_of(&m).ok();
    assert_eq!(config_item::items_of(&again).ok(), items, "the items changed on a round trip");
    let strip = |m: &Manifest| Manifest { metadata: None, ..m.clone() };
    assert_eq!(strip(&again), strip(&m), "the manifest changed on a round trip");
    let _ = m.require_signed_programs(path);
    for p in &m.programs {
        let _ = p.display();
    }
    let _ = (m.total_size(), bundle::file_name(&m));
}

/// The signature envelope of a folder: `manifest.json`, `manifest.sig` and `publisher.pem`
/// ([`split_parts`] of three) checked by [`SignatureFiles::verify`] against the fixture root.
pub fn signature_files(data: &[u8]) {
    let [manifest, signature, chain] = split_parts::<3>(data);
    let files = SignatureFiles {
        manifest: manifest.to_vec(),
        signature: signature.to_vec(),
        chain: chain.to_vec(),
    };
    if let Ok((m, chain)) = files.verify(Path::new("card"), trust(), now()) {
        assert!(!chain.is_empty(), "a verified folder without a publisher");
        assert!(Manifest::parse(manifest, Path::new("m")).is_ok_and(|again| again == m));
    }
}

/// A unique temp file for this thread's bundle input.
fn bundle_path() -> PathBuf {
    let thread = format!("{:?}", std::thread::current().id());
    let thread: String = thread.chars().filter(char::is_ascii_digit).collect();
    std::env::temp_dir().join(format!("dm-fuzz-{}-{thread}.dmpkg", std::process::id()))
}

/// A `.dmpkg` bundle: the bytes as a file, read by [`bundle::verify`] against the fixture root.
pub fn bundle(data: &[u8]) {
    let path = bundle_path();
    if let Err(e) = std::fs::write(&path, data) {
        panic!("cannot write the fuzz input to {}: {e}", path.display());
    }
    let verified = bundle::verify(&path, trust(), now());
    let _ = std::fs::remove_file(&path);
    if let Ok((m, chain)) = verified {
        assert!(!chain.is_empty(), "a verified bundle without a publisher");
        assert!(m.files.len() <= crate::manifest::MAX_FILES);
    }
}

/// Certificates: [`Cert::parse_pem`] and [`Cert::from_der`]; an accepted certificate written as
/// PEM parses to the same certificate; a parsed chain is checked as a publisher's.
pub fn cert(data: &[u8]) {
    let path = Path::new("publisher.pem");
    let check = |c: &Cert| {
        let _ = (c.describe(), c.valid_at(now()), c.not_before(), c.not_after());
        match Cert::parse_pem(c.to_pem().as_bytes(), path) {
            Ok(again) => {
                assert_eq!(
                    again,
                    std::slice::from_ref(c),
                    "a certificate changed on a PEM round trip"
                )
            }
            Err(e) => panic!("an accepted certificate, written as PEM, is refused: {e}"),
        }
    };
    if let Ok(certs) = Cert::parse_pem(data, path) {
        certs.iter().for_each(check);
        let _ = pki::verify_code_signing_chain(&certs, trust(), now(), path);
    }
    if let Ok(c) = Cert::from_der(data.to_vec(), path) {
        check(&c);
        let _ = pki::verify_code_signing_chain(&[c], trust(), now(), path);
    }
}

/// Revocation lists: [`Crl::parse`] (PEM or DER); an accepted list written as PEM parses to
/// the same list; the fixture publisher's chain is checked with the list in the trust.
pub fn crl(data: &[u8]) {
    let path = Path::new("ca.crl");
    let Ok(crls) = Crl::parse(data, path) else { return };
    for c in &crls {
        let _ = (c.is_stale(now()), c.thumbprint(), c.this_update(), c.issuer());
        for cert in publisher_chain() {
            let _ = c.revokes(cert);
        }
        match Crl::parse(c.to_pem().as_bytes(), path) {
            Ok(again) => {
                assert_eq!(again, std::slice::from_ref(c), "a list changed on a PEM round trip")
            }
            Err(e) => panic!("an accepted list, written as PEM, is refused: {e}"),
        }
    }
    let trust = Trust { crls, ..trust().clone() };
    let _ = pki::verify_code_signing_chain(publisher_chain(), &trust, now(), path);
}

/// Settings INI files: [`Settings::parse`]; accepted settings written out again
/// ([`Settings::to_ini`]) parse to the same settings.
pub fn settings(data: &[u8]) {
    let path = Path::new("ClientSettings.ini");
    let Ok((s, _warnings)) = Settings::parse(path, data) else { return };
    let text = s.to_ini();
    match Settings::parse(path, text.as_bytes()) {
        Ok((again, _)) => assert_eq!(again, s, "settings changed when written out:\n{text}"),
        Err(e) => panic!("accepted settings, written out, are refused: {e}\n{text}"),
    }
    let _ = s.log_level();
}

/// Configuration items: one item ([`ConfigItem::from_json`]) or a package's list
/// ([`config_item::check_items`]); an accepted item written out again parses to the same item,
/// and its `matches` patterns run against its description.
pub fn config_item(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(items) = serde_json::from_str::<Vec<ConfigItem>>(text) {
        let _ = config_item::check_items(&items);
    }
    let Ok(item) = ConfigItem::from_json(text) else { return };
    let json = match serde_json::to_string(&item) {
        Ok(j) => j,
        Err(e) => panic!("an accepted item cannot be written: {e}"),
    };
    match ConfigItem::from_json(&json) {
        Ok(again) => assert_eq!(again, item, "the item changed on a round trip"),
        Err(e) => panic!("an accepted item, written out, is refused: {e}"),
    }
    let _ = item.applies_to(&Platform::current());
    for s in &item.settings {
        let _ = s.target.path();
        if let (Rule::Matches, Some(pattern)) = (s.rule, s.value.as_str()) {
            let _ = config_item::wildcard_match(pattern, &item.description);
        }
    }
}

/// Software updates on the device: dpkg's status database (the first part) read into the
/// installed packages, and a catalog (the rest) scanned against them. Every version compared
/// is compared both ways, and the two answers must be each other's reverse.
pub fn software_updates(data: &[u8]) {
    let [status, catalog] = split_parts::<2>(data);
    let Ok(installed) = crate::debian::installed_packages(status, "arm64") else { return };
    let versions: Vec<&str> = installed.values().map(|p| p.version.as_str()).take(32).collect();
    for a in &versions {
        for b in &versions {
            let (x, y) =
                (crate::debian::compare_versions(a, b), crate::debian::compare_versions(b, a));
            assert_eq!(x, y.reverse(), "{a:?} against {b:?}");
        }
    }
    if let Ok(scan) = crate::updates::scan(catalog, &installed, "arm64") {
        assert!(scan.rows.values().all(|r| r.state != crate::updates::UpdateState::NotRequired));
    }
}

/// A fuzz target: its name (`fuzz/fuzz_targets/<name>.rs`, `fuzz/corpus/<name>/`) and body.
pub type Target = (&'static str, fn(&[u8]));

/// This crate's targets, for the replay.
pub const TARGETS: &[Target] = &[
    ("manifest", manifest),
    ("signature_files", signature_files),
    ("bundle", bundle),
    ("cert", cert),
    ("crl", crl),
    ("settings", settings),
    ("config_item", config_item),
    ("software_updates", software_updates),
];

/// Runs every file of `fuzz/corpus/<target>/` and `fuzz/regressions/<target>/` (under
/// `repo`, the repository root) through its target; panics naming the file that made a target
/// panic, or when a target has no corpus. Returns how many files ran.
pub fn replay(repo: &Path, targets: &[Target]) -> usize {
    let mut ran = 0;
    for (name, target) in targets {
        let mut corpus = 0;
        for kind in ["corpus", "regressions"] {
            let dir = repo.join("fuzz").join(kind).join(name);
            let Ok(entries) = std::fs::read_dir(&dir) else { continue };
            let mut files: Vec<PathBuf> = entries.filter_map(|e| Some(e.ok()?.path())).collect();
            files.sort();
            for file in files.iter().filter(|f| f.is_file()) {
                let data = match std::fs::read(file) {
                    Ok(d) => d,
                    Err(e) => panic!("cannot read {}: {e}", file.display()),
                };
                if std::panic::catch_unwind(|| target(&data)).is_err() {
                    panic!("fuzz target {name} panics on {}", file.display());
                }
                ran += 1;
                corpus += usize::from(kind == "corpus");
            }
        }
        assert!(corpus > 0, "fuzz target {name} has no corpus under {}", repo.display());
    }
    ran
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_split_as_they_were_joined() {
        let parts: [&[u8]; 3] = [b"manifest", b"", b"chain"];
        assert_eq!(split_parts::<3>(&join_parts(&parts)), parts);
        assert_eq!(split_parts::<2>(b"\xff\xff\xff\xffab"), [&b"ab"[..], b""]);
        assert_eq!(split_parts::<3>(b"\x01"), [&b""[..], b"", b""]);
    }

    fn corpus(target: &str) -> Vec<Vec<u8>> {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus").join(target);
        let files = std::fs::read_dir(dir).unwrap();
        files.map(|e| std::fs::read(e.unwrap().path()).unwrap()).collect()
    }

    /// Some inputs of the corpora verify against the fixtures, so the fuzzer starts past the
    /// signature checks (new fixtures without new seeds would leave it at the signature).
    #[test]
    fn the_corpora_hold_inputs_signed_by_the_fixtures() {
        let signed = corpus("signature_files").iter().any(|data| {
            let [m, s, c] = split_parts::<3>(data).map(<[u8]>::to_vec);
            let files = SignatureFiles { manifest: m, signature: s, chain: c };
            files.verify(Path::new("card"), trust(), now()).is_ok()
        });
        assert!(signed, "no input of fuzz/corpus/signature_files verifies");
        let path = bundle_path();
        let bundled = corpus("bundle").iter().any(|data| {
            std::fs::write(&path, data).unwrap();
            bundle::verify(&path, trust(), now()).is_ok()
        });
        std::fs::remove_file(&path).unwrap();
        assert!(bundled, "no input of fuzz/corpus/bundle verifies");
    }

    #[test]
    fn fuzz_corpus_replays() {
        let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        assert!(replay(&repo, TARGETS) > 0);
    }
}
