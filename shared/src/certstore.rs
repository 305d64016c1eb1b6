//! The device's certificate stores: `root`, `privileged`, `spc` and `my`.
//!
//! Each store is a folder under `etc/dm/certs/`, one PEM file per certificate named by its
//! SHA-256 thumbprint (`<thumbprint>.pem`), written atomically with mode 0600. An administrator
//! may also drop a PEM file of any name into a store; it is read the same way. A file that is
//! not a certificate is logged and ignored, never fatal.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::fs::{self as dmfs, Transaction};
use crate::layout::{DeviceLayout, StoreName};
use crate::pki::{self, Cert};

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

/// The device's trusted roots, for chain checks. An empty store is logged: nothing can be
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
