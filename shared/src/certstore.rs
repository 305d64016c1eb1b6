//! The device's certificate stores (`root`, `tls-root`, `privileged`, `spc`, `disallowed`,
//! `my`), its certificate revocation lists, and what they add up to for code signing
//! ([`trust`]).
//!
//! Each store is a folder under `etc/dm/certs/`, one PEM file per certificate named by its
//! SHA-256 thumbprint (`<thumbprint>.pem`), written atomically with mode 0600. An administrator
//! may also drop a PEM file of any name into a store; it is read the same way. A file that is
//! not a certificate is logged and ignored, never fatal.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::fs::{self as dmfs, Transaction};
use crate::layout::{DeviceLayout, StoreName};
use crate::pki::{self, Cert, Crl, Trust};

/// One certificate store.
#[derive(Debug, Clone)]
pub struct CertStore {
    name: StoreName,
    dir: PathBuf,
}

impl CertStore {
    /// The store `name` of the device.
    pub fn open(layout: &DeviceLayout, name: StoreName) -> CertStore {
        CertStore { name, dir: layout.cert_store_dir(name) }
    }

    /// Which store.
    pub fn name(&self) -> StoreName {
        self.name
    }

    /// Its folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The file a certificate is stored in.
    pub fn path_for(&self, thumbprint: &str) -> PathBuf {
        self.dir.join(format!("{thumbprint}.pem"))
    }

    /// Every certificate in the store (none when the folder does not exist).
    pub fn list(&self) -> Result<Vec<Cert>> {
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(dmfs::io_err("list", &self.dir)(e)),
        };
        let mut paths: Vec<PathBuf> = entries
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "pem" || x == "crt"))
            .collect();
        paths.sort_unstable();
        let mut certs: Vec<Cert> = Vec::new();
        for p in paths {
            match Cert::load_pem(&p) {
                Ok(found) => {
                    for c in found {
                        if !certs.iter().any(|have| have.thumbprint() == c.thumbprint()) {
                            certs.push(c);
                        }
                    }
                }
                Err(e) => log::warn!("{} store: ignoring {}: {e}", self.name, p.display()),
            }
        }
        Ok(certs)
    }

    /// Whether a certificate with this thumbprint is in the store.
    pub fn contains(&self, thumbprint: &str) -> Result<bool> {
        if self.path_for(thumbprint).is_file() {
            return Ok(true);
        }
        Ok(self.list()?.iter().any(|c| c.thumbprint() == thumbprint))
    }

    /// Adds a certificate as part of `tx`. Returns `false` when it was already there.
    pub fn add(&self, cert: &Cert, tx: &mut Transaction) -> Result<bool> {
        if self.contains(cert.thumbprint())? {
            return Ok(false);
        }
        tx.create_dir_all(&self.dir, dmfs::MODE_DIR)?;
        tx.write(&self.path_for(cert.thumbprint()), cert.to_pem().as_bytes(), dmfs::MODE_PRIVATE)?;
        Ok(true)
    }

    /// Adds a certificate on its own. Returns `false` when it was already there.
    pub fn add_now(&self, cert: &Cert) -> Result<bool> {
        let mut tx = Transaction::new();
        let added = self.add(cert, &mut tx)?;
        tx.commit();
        Ok(added)
    }

    /// Removes the certificate with this thumbprint. Returns whether it was there.
    pub fn remove(&self, thumbprint: &str) -> Result<bool> {
        if !thumbprint.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(Error::UnsafePath {
                path: thumbprint.to_string(),
                reason: "a thumbprint is hexadecimal".into(),
            });
        }
        dmfs::remove_file(&self.path_for(thumbprint))
    }
}

/// The device's code-signing roots, for chain checks. An empty store is logged: nothing can be
/// trusted until a root is installed.
pub fn trusted_roots(layout: &DeviceLayout) -> Result<Vec<Cert>> {
    let store = CertStore::open(layout, StoreName::Root);
    let roots = store.list()?;
    if roots.is_empty() {
        log::warn!(
            "the root store {} has no certificates: no publisher can be trusted",
            store.dir().display()
        );
    } else {
        for r in &roots {
            log::debug!("trusted root: {}", r.describe());
        }
    }
    Ok(roots)
}

/// The revocation lists in the device's CRL folder. A file that is not a CRL is logged and
/// ignored; a stale list is logged and still applies.
pub fn crls(layout: &DeviceLayout, now: std::time::SystemTime) -> Result<Vec<Crl>> {
    read_crls(layout, Some(now))
}

/// [`crls`] without the log lines, for a look that repeats at every poll (the inventory).
pub fn crls_quietly(layout: &DeviceLayout) -> Result<Vec<Crl>> {
    read_crls(layout, None)
}

/// The lists; `warn_at` logs what [`crls`] logs, at that time.
fn read_crls(layout: &DeviceLayout, warn_at: Option<std::time::SystemTime>) -> Result<Vec<Crl>> {
    let dir = layout.crl_dir();
    let entries = match std::fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(dmfs::io_err("list", &dir)(e)),
    };
    let mut paths: Vec<PathBuf> = entries
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "crl" || x == "pem"))
        .collect();
    paths.sort_unstable();
    let mut out = Vec::new();
    for p in paths {
        match Crl::load(&p) {
            Ok(lists) => {
                for l in lists {
                    if warn_at.is_some_and(|now| l.is_stale(now)) {
                        log::warn!(
                            "{}: the revocation list of {} is past its next update; its revocations still apply, newer ones may be missing",
                            p.display(),
                            l.issuer()
                        );
                    }
                    out.push(l);
                }
            }
            Err(e) if warn_at.is_some() => log::warn!("ignoring {}: {e}", p.display()),
            Err(_) => {}
        }
    }
    Ok(out)
}

/// Everything the device trusts for code signing: the `root` store, minus what the
/// `disallowed` store names, checked against the CRLs in `etc/dm/crl/`.
pub fn trust(layout: &DeviceLayout, now: std::time::SystemTime) -> Result<Trust> {
    Ok(Trust {
        roots: trusted_roots(layout)?,
        disallowed: CertStore::open(layout, StoreName::Disallowed).list()?,
        crls: crls(layout, now)?,
    })
}

/// The CAs whose revocation lists the device keeps: the `root` store's certificates that the
/// `disallowed` store does not name, and the CA certificates among `chains` (publisher chains
/// the device verified, such as its installed packages') that one of those issued, directly
/// or through another such CA.
pub fn crl_signers(layout: &DeviceLayout, chains: &[Vec<Cert>]) -> Result<Vec<Cert>> {
    let disallowed = CertStore::open(layout, StoreName::Disallowed).list()?;
    let allowed = |c: &Cert| !disallowed.iter().any(|d| d.thumbprint() == c.thumbprint());
    let mut signers: Vec<Cert> =
        CertStore::open(layout, StoreName::Root).list()?.into_iter().filter(allowed).collect();
    let mut candidates: Vec<&Cert> =
        chains.iter().flatten().filter(|c| c.is_ca() && allowed(c)).collect();
    while let Some(i) = candidates.iter().position(|c| signers.iter().any(|s| c.is_issued_by(s))) {
        let ca = candidates.swap_remove(i);
        if !signers.iter().any(|s| s.thumbprint() == ca.thumbprint()) {
            signers.push(ca.clone());
        }
    }
    Ok(signers)
}

/// Stores a revocation list in the device's CRL folder (named by its SHA-256) when one of
/// `signers` ([`crl_signers`]) signed it, and removes the lists it replaces: those of the same
/// CA and scope, signed by the same CA, that it is newer than (by CRL number, then
/// `thisUpdate`). A list no trusted CA signed is refused ([`Error::CrlUntrusted`]) and
/// changes nothing: the device never drops a list on the word of one it cannot verify.
/// Returns whether it was stored (`false`: the device has it, or a newer one).
pub fn store_crl(
    layout: &DeviceLayout,
    crl: &Crl,
    signers: &[Cert],
    now: std::time::SystemTime,
) -> Result<bool> {
    let Some(ca) = crl.signer(signers) else {
        return Err(Error::CrlUntrusted {
            path: crl.source().to_path_buf(),
            issuer: crl.issuer().to_string(),
        });
    };
    let dir = layout.crl_dir();
    let dest = dir.join(format!("{}.crl", crl.thumbprint()));
    if dest.is_file() {
        return Ok(false);
    }
    let replaced: Vec<Crl> = crls(layout, now)?
        .into_iter()
        .filter(|o| o.same_scope(crl) && o.is_signed_by(ca))
        .collect();
    if let Some(newer) = replaced.iter().find(|o| !crl.is_newer_than(o)) {
        log::warn!(
            "not storing the revocation list of {} from {}: the device has one as new or newer ({})",
            crl.issuer(),
            crl.source().display(),
            newer.source().display()
        );
        return Ok(false);
    }
    dmfs::create_dir_all(&dir, dmfs::MODE_DIR)?;
    dmfs::write_atomic(&dest, crl.der(), dmfs::MODE_PUBLIC)?;
    for old in replaced {
        dmfs::remove_file(old.source())?;
    }
    Ok(true)
}

/// The roots for the management point's TLS: the `tls-root` store. A device set up before the
/// two stores were separate has only `root`, which served both: its roots are copied into
/// `tls-root` once, so the device keeps reaching its management point (docs/certificates.md).
pub fn tls_roots(layout: &DeviceLayout) -> Result<Vec<Cert>> {
    let tls = CertStore::open(layout, StoreName::TlsRoot);
    if !tls.dir().exists() {
        migrate_tls_roots(layout, &tls)?;
    }
    tls.list()
}

/// Copies the `root` store into a new `tls-root` store, all or nothing: the copy is made in
/// a sibling folder and renamed into place, so a kill or a power cut never leaves an empty
/// `tls-root` behind (which would cut the device off from its management point for good).
fn migrate_tls_roots(layout: &DeviceLayout, tls: &CertStore) -> Result<()> {
    let old = CertStore::open(layout, StoreName::Root).list()?;
    if old.is_empty() {
        return Ok(());
    }
    let building = tls.dir().with_extension("migrating");
    dmfs::remove_dir_all(&building)?;
    dmfs::create_dir_all(&building, dmfs::MODE_DIR)?;
    for c in &old {
        let file = building.join(format!("{}.pem", c.thumbprint()));
        dmfs::write_atomic(&file, c.to_pem().as_bytes(), dmfs::MODE_PRIVATE)?;
    }
    dmfs::rename(&building, tls.dir())?;
    log::warn!(
        "the tls-root store did not exist: copied the {} certificate(s) of the root store into {}; from now on TLS and code signing trust separate roots",
        old.len(),
        tls.dir().display()
    );
    Ok(())
}

/// Checks that the publisher (first certificate of a verified chain) is in the `spc` store.
pub fn require_spc_publisher(layout: &DeviceLayout, publisher: &Cert) -> Result<()> {
    if CertStore::open(layout, StoreName::Spc).contains(publisher.thumbprint())? {
        Ok(())
    } else {
        Err(Error::PublisherNotInSpc {
            subject: publisher.subject().to_string(),
            thumbprint: publisher.thumbprint().to_string(),
        })
    }
}

/// The SHA-256 thumbprint of DER bytes; the name of a store file.
pub fn thumbprint_of(der: &[u8]) -> String {
    pki::sha256_hex(der)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::signed_folder;

    #[test]
    fn tls_roots_are_migrated_once_and_a_half_done_migration_is_redone() {
        let f = signed_folder(vec![]);
        let layout = DeviceLayout::new(f.tmp.path().join("device"));
        let root = CertStore::open(&layout, StoreName::Root);
        root.add_now(&f.trust.roots[0]).unwrap();

        // A migration killed halfway left its building folder (and no tls-root).
        let tls = CertStore::open(&layout, StoreName::TlsRoot);
        let building = tls.dir().with_extension("migrating");
        dmfs::create_dir_all(&building, dmfs::MODE_DIR).unwrap();
        std::fs::write(building.join("partial.pem"), b"-----BEGIN CERT").unwrap();
        let got = tls_roots(&layout).unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].thumbprint(), f.trust.roots[0].thumbprint());
        assert!(!building.exists());

        // From then on the stores are separate: a root removed from tls-root stays removed.
        assert!(tls.remove(f.trust.roots[0].thumbprint()).unwrap());
        assert!(tls_roots(&layout).unwrap().is_empty());
        assert_eq!(root.list().unwrap().len(), 1);
    }

    const DAY: std::time::Duration = std::time::Duration::from_secs(86_400);

    /// A device trusting `Root`, with a publisher `Root` issued.
    struct Device {
        _tmp: tempfile::TempDir,
        layout: DeviceLayout,
        root: crate::devpki::Issued,
        chain: Vec<Cert>,
        now: std::time::SystemTime,
    }

    fn device() -> Device {
        use crate::devpki::{self, Purpose};
        use crate::testing::{certs, spec};
        let now = std::time::SystemTime::now();
        let root = devpki::root_ca(&spec("Root", Purpose::Ca, now)).unwrap();
        let publisher =
            devpki::issue(&root, &spec("Publisher", Purpose::CodeSigning, now)).unwrap();
        let tmp = tempfile::tempdir().unwrap();
        let layout = DeviceLayout::new(tmp.path().join("device"));
        CertStore::open(&layout, StoreName::Root).add_now(&certs(&root.cert_pem)[0]).unwrap();
        let chain = certs(&publisher.cert_pem);
        Device { _tmp: tmp, layout, root, chain, now }
    }

    impl Device {
        fn list(&self, ca: &crate::devpki::Issued, n: u64, at: i64, scope: bool) -> Crl {
            let this = if at >= 0 {
                self.now + DAY * at as u32
            } else {
                self.now - DAY * at.unsigned_abs() as u32
            };
            let narrowed = crate::devpki::ListScope {
                uris: vec!["http://ca.example/other.crl".into()],
                only_ca_certs: true,
            };
            let pem = crate::devpki::crl_scoped(
                ca,
                &[self.chain[0].serial()],
                n,
                (this, this + 30 * DAY),
                scope.then_some(&narrowed),
            )
            .unwrap();
            Crl::parse(pem.as_bytes(), Path::new("from-the-management-point")).unwrap().remove(0)
        }

        fn signers(&self) -> Vec<Cert> {
            crl_signers(&self.layout, &[]).unwrap()
        }

        fn store(&self, crl: &Crl) -> Result<bool> {
            store_crl(&self.layout, crl, &self.signers(), self.now)
        }

        fn verify(&self) -> Result<()> {
            let trust = trust(&self.layout, self.now).unwrap();
            pki::verify_code_signing_chain(&self.chain, &trust, self.now, Path::new("p.pem"))
        }

        fn files(&self) -> usize {
            std::fs::read_dir(self.layout.crl_dir()).map_or(0, |d| d.count())
        }
    }

    /// The attack of the review: a management point (or anyone on its path) sends a list
    /// that claims the real CA's name, is far newer, and is narrowed to CA certificates only.
    /// Stored, it would replace the CA's real list and leave the revoked publisher unchecked,
    /// which the device allowed. It is refused, and the real list stays.
    #[test]
    fn a_forged_revocation_list_cannot_unrevoke_a_publisher() {
        let d = device();
        assert!(d.store(&d.list(&d.root, 2, -1, false)).unwrap());
        assert_eq!(d.verify().unwrap_err().code(), crate::StatusCode::CERT_E_REVOKED);

        // The forger's CA has the same name and a key of its own.
        let forger = crate::devpki::root_ca(&crate::testing::spec(
            "Root",
            crate::devpki::Purpose::Ca,
            d.now,
        ))
        .unwrap();
        let forged = d.list(&forger, 1000, 3650, true);
        let err = d.store(&forged).unwrap_err();
        assert!(matches!(err, Error::CrlUntrusted { .. }), "{err}");
        assert_eq!(err.code(), crate::StatusCode::DM_E_CRL_UNTRUSTED);
        assert_eq!(d.files(), 1, "the real list stays, and nothing else was written");
        assert_eq!(d.verify().unwrap_err().code(), crate::StatusCode::CERT_E_REVOKED);

        // Placed by hand beside the real list, it changes nothing either; alone, the
        // publisher is unchecked (refused), never good.
        std::fs::write(d.layout.crl_dir().join("forged.crl"), forged.der()).unwrap();
        assert_eq!(d.verify().unwrap_err().code(), crate::StatusCode::CERT_E_REVOKED);
        for e in std::fs::read_dir(d.layout.crl_dir()).unwrap() {
            let p = e.unwrap().path();
            if !p.ends_with("forged.crl") {
                std::fs::remove_file(p).unwrap();
            }
        }
        let err = d.verify().unwrap_err();
        assert_eq!(err.code(), crate::StatusCode::CRYPT_E_NO_REVOCATION_CHECK, "{err}");
    }

    /// A genuine list of the CA that does not speak for the publisher (narrowed to CA
    /// certificates) leaves the publisher unchecked: refused, not taken as good.
    #[test]
    fn a_ca_whose_lists_do_not_cover_the_publisher_leaves_it_unchecked() {
        let d = device();
        assert!(d.verify().is_ok(), "no list at all: unknown status, allowed");
        assert!(d.store(&d.list(&d.root, 5, -1, true)).unwrap());
        let err = d.verify().unwrap_err();
        assert_eq!(err.code(), crate::StatusCode::CRYPT_E_NO_REVOCATION_CHECK, "{err}");
        assert!(err.to_string().contains("narrowed"), "{err}");
        // A list of the same CA for all its certificates is another scope: both are kept.
        assert!(d.store(&d.list(&d.root, 1, -2, false)).unwrap());
        assert_eq!(d.files(), 2);
        assert_eq!(d.verify().unwrap_err().code(), crate::StatusCode::CERT_E_REVOKED);
    }

    /// Rollback of revocation: an older list of the same CA and scope never replaces a newer
    /// one. Newer is the higher CRL number first, the later thisUpdate second.
    #[test]
    fn revocation_lists_replace_only_older_ones_of_their_ca() {
        let d = device();
        let first = d.list(&d.root, 2, -3, false);
        assert!(d.store(&first).unwrap());
        assert!(!d.store(&first).unwrap(), "the same list again");
        // A higher number wins even with an earlier thisUpdate (a CA clock set back).
        let higher = d.list(&d.root, 3, -5, false);
        assert!(d.store(&higher).unwrap());
        assert_eq!(d.files(), 1, "the older list is removed");
        // A lower number is refused, however late its thisUpdate.
        assert!(!d.store(&d.list(&d.root, 1, 0, false)).unwrap());
        // The same number: the later thisUpdate wins.
        assert!(d.store(&d.list(&d.root, 3, -1, false)).unwrap());
        assert!(!d.store(&d.list(&d.root, 3, -4, false)).unwrap());
        assert_eq!(d.files(), 1);
    }

    /// An intermediate CA's list is kept when the intermediate was issued by a trusted root;
    /// a self-made "intermediate" with the same name is not a signer.
    #[test]
    fn intermediate_cas_sign_lists_only_when_a_root_issued_them() {
        use crate::devpki::{self, Purpose};
        use crate::testing::{certs, spec};
        let d = device();
        let inter = devpki::issue(&d.root, &spec("Inter", Purpose::Ca, d.now)).unwrap();
        let stranger = devpki::root_ca(&spec("Inter", Purpose::Ca, d.now)).unwrap();
        let chains = vec![certs(&inter.cert_pem), certs(&stranger.cert_pem)];
        let signers = crl_signers(&d.layout, &chains).unwrap();
        assert_eq!(signers.len(), 2, "the root and the intermediate it issued");
        let list = d.list(&inter, 1, -1, false);
        assert!(store_crl(&d.layout, &list, &signers, d.now).unwrap());
        let forged = d.list(&stranger, 2, 0, false);
        assert!(store_crl(&d.layout, &forged, &signers, d.now).is_err());
        assert!(store_crl(&d.layout, &list, &d.signers(), d.now).is_err(), "unknown CA");
    }

    #[test]
    fn a_device_without_roots_gets_no_tls_store() {
        let f = signed_folder(vec![]);
        let layout = DeviceLayout::new(f.tmp.path().join("device"));
        assert!(tls_roots(&layout).unwrap().is_empty());
        assert!(!CertStore::open(&layout, StoreName::TlsRoot).dir().exists());
    }
}
