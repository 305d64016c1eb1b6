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
        paths.sort();
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
    paths.sort();
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

/// Stores a revocation list in the device's CRL folder (named by its SHA-256), replacing any
/// older list of the same issuer. Returns whether anything changed.
pub fn store_crl(layout: &DeviceLayout, crl: &Crl, now: std::time::SystemTime) -> Result<bool> {
    let dir = layout.crl_dir();
    let dest = dir.join(format!("{}.crl", crl.thumbprint()));
    if dest.is_file() {
        return Ok(false);
    }
    for old in crls(layout, now)?.iter().filter(|o| o.issuer() == crl.issuer()) {
        if old.this_update() > crl.this_update() {
            log::warn!(
                "not storing the revocation list of {} from {}: the device has a newer one",
                crl.issuer(),
                crl.source().display()
            );
            return Ok(false);
        }
    }
    dmfs::create_dir_all(&dir, dmfs::MODE_DIR)?;
    dmfs::write_atomic(&dest, crl.der(), dmfs::MODE_PUBLIC)?;
    for old in
        crls(layout, now)?.iter().filter(|o| o.issuer() == crl.issuer() && o.der() != crl.der())
    {
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

    #[test]
    fn a_device_without_roots_gets_no_tls_store() {
        let f = signed_folder(vec![]);
        let layout = DeviceLayout::new(f.tmp.path().join("device"));
        assert!(tls_roots(&layout).unwrap().is_empty());
        assert!(!CertStore::open(&layout, StoreName::TlsRoot).dir().exists());
    }
}
