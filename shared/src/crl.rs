//! Certificate revocation lists (RFC 5280) as their CAs publish them: parsed with
//! `x509-cert`, each list's signature checked with the key of the CA that issued it, its scope
//! (the Issuing Distribution Point) and its order (CRL number, then `thisUpdate`) known.
//!
//! The device's rules, which these make possible (docs/certificates.md): a list is kept only
//! when a CA the device trusts signed it; it replaces only an older list of the same CA and
//! scope that the same CA signed; and a certificate whose CA has lists on the device, none of
//! which covers it, is unchecked, not good.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use der::{Decode, Encode};
use x509_cert::crl::CertificateList;
use x509_cert::ext::pkix::crl::dp::IssuingDistributionPoint;
use x509_cert::ext::pkix::name::{DistributionPointName, GeneralName};

use crate::cert::Cert;
use crate::clock;
use crate::encoding::sha256_hex;
use crate::error::{Error, Result};
use crate::x509;

/// The largest CRL file read.
pub const MAX_CRL_BYTES: u64 = 4 * 1024 * 1024;

/// A certificate revocation list (RFC 5280) as a CA published it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Crl {
    der: Vec<u8>,
    issuer: String,
    issuer_der: Vec<u8>,
    revoked: Vec<Vec<u8>>,
    this_update: i64,
    next_update: Option<i64>,
    number: Option<Vec<u8>>,
    scope: Option<Scope>,
    source: PathBuf,
}

/// What an Issuing Distribution Point narrows a list to.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Scope {
    /// The extension's value, to tell two scopes of one CA apart.
    der: Vec<u8>,
    only_user_certs: bool,
    only_ca_certs: bool,
    /// The distribution point's URIs; empty when it names none.
    uris: Vec<String>,
}

impl Crl {
    /// Parses a DER CRL. `source` names where it came from, for errors.
    pub fn from_der(der: Vec<u8>, source: &Path) -> Result<Crl> {
        let bad = |reason: String| Error::CrlUnusable { path: source.to_path_buf(), reason };
        let list = CertificateList::from_der(&der)
            .map_err(|e| bad(format!("not a certificate revocation list: {e}")))?;
        // rustls-webpki checks chains with it: refuse here what it would refuse there
        // (version 1, delta and indirect lists, partitions by reason).
        webpki::BorrowedCertRevocationList::from_der(&der)
            .map_err(|e| bad(format!("not usable for revocation checks: {e:?}")))?;
        let tbs = &list.tbs_cert_list;
        let mut number = None;
        let mut scope = None;
        for ext in tbs.crl_extensions.iter().flatten() {
            let value = ext.extn_value.as_bytes();
            if ext.extn_id == x509::CRL_NUMBER {
                let n = der::asn1::UintRef::from_der(value)
                    .map_err(|e| bad(format!("its CRL number: {e}")))?;
                number = Some(n.as_bytes().to_vec());
            } else if ext.extn_id == x509::ISSUING_DISTRIBUTION_POINT {
                scope = Some(Scope::parse(value).map_err(bad)?);
            }
        }
        let revoked = tbs
            .revoked_certificates
            .iter()
            .flatten()
            .map(|r| r.serial_number.as_bytes().to_vec())
            .collect();
        Ok(Crl {
            issuer: x509::name_string(&tbs.issuer),
            issuer_der: tbs.issuer.to_der().map_err(|e| bad(e.to_string()))?,
            revoked,
            this_update: x509::unix(&tbs.this_update),
            next_update: tbs.next_update.as_ref().map(x509::unix),
            number,
            scope,
            source: source.to_path_buf(),
            der,
        })
    }

    /// Parses a file's CRLs: PEM (`BEGIN X509 CRL`, any number) or one DER CRL.
    pub fn parse(bytes: &[u8], source: &Path) -> Result<Vec<Crl>> {
        use rustls_pki_types::CertificateRevocationListDer;
        use rustls_pki_types::pem::PemObject;
        if !bytes.starts_with(b"-----") && !bytes.windows(10).any(|w| w == b"-----BEGIN") {
            return Ok(vec![Crl::from_der(bytes.to_vec(), source)?]);
        }
        let mut out = Vec::new();
        for item in CertificateRevocationListDer::pem_slice_iter(bytes) {
            let der = item.map_err(|e| Error::CrlUnusable {
                path: source.to_path_buf(),
                reason: format!("bad PEM: {e}"),
            })?;
            out.push(Crl::from_der(der.to_vec(), source)?);
        }
        if out.is_empty() {
            return Err(Error::CrlUnusable {
                path: source.to_path_buf(),
                reason: "no X509 CRL block in the PEM file".into(),
            });
        }
        Ok(out)
    }

    /// Reads a CRL file (capped at [`MAX_CRL_BYTES`]).
    pub fn load(path: &Path) -> Result<Vec<Crl>> {
        Crl::parse(&crate::fs::read_capped(path, MAX_CRL_BYTES)?, path)
    }

    /// DER bytes.
    pub fn der(&self) -> &[u8] {
        &self.der
    }

    /// The issuing CA's name.
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// The issuing CA's name as DER, for exact comparisons.
    pub fn issuer_der(&self) -> &[u8] {
        &self.issuer_der
    }

    /// Where it was read from.
    pub fn source(&self) -> &Path {
        &self.source
    }

    /// SHA-256 of the DER, lowercase hex: its file name in the device's CRL folder.
    pub fn thumbprint(&self) -> String {
        sha256_hex(&self.der)
    }

    /// When it was issued (Unix seconds).
    pub fn this_update(&self) -> i64 {
        self.this_update
    }

    /// Its CRL number, big-endian without leading zeros, when it has one.
    pub fn number(&self) -> Option<&[u8]> {
        self.number.as_deref().map(|n| {
            let zeros = n.iter().take_while(|b| **b == 0).count();
            &n[zeros..]
        })
    }

    /// Whether an Issuing Distribution Point narrows it to part of its CA's certificates.
    pub fn is_scoped(&self) -> bool {
        self.scope.is_some()
    }

    /// Whether its next update is past at `now`: its revocations still apply, but newer ones
    /// may be missing.
    pub fn is_stale(&self, now: SystemTime) -> bool {
        self.next_update.is_some_and(|n| n < clock::unix_secs(now) as i64)
    }

    /// Whether it revokes `cert`.
    pub fn revokes(&self, cert: &Cert) -> bool {
        self.issuer_der == cert.issuer_der() && self.revoked.iter().any(|s| s == cert.serial())
    }

    /// Whether `ca` issued it: the names match and `ca`'s key made its signature.
    pub fn is_signed_by(&self, ca: &Cert) -> bool {
        self.issuer_der == ca.subject_der()
            && x509::signed_parts(&self.der)
                .is_ok_and(|s| x509::verify_signed(&s, ca.der()).is_ok())
    }

    /// The first of `cas` that signed it.
    pub fn signer<'a>(&self, cas: &'a [Cert]) -> Option<&'a Cert> {
        cas.iter().find(|ca| self.is_signed_by(ca))
    }

    /// Whether `other` is a list of the same CA for the same certificates (the same Issuing
    /// Distribution Point, or none for both): one of the two replaces the other.
    pub fn same_scope(&self, other: &Crl) -> bool {
        self.issuer_der == other.issuer_der
            && self.scope.as_ref().map(|s| &s.der) == other.scope.as_ref().map(|s| &s.der)
    }

    /// Whether it is newer than `other`, a list of the same CA and scope: the higher CRL
    /// number when both have one (RFC 5280 §5.2.3), else the later `thisUpdate`; a tie on the
    /// number goes to the later `thisUpdate`.
    pub fn is_newer_than(&self, other: &Crl) -> bool {
        use std::cmp::Ordering;
        let by_number = match (self.number(), other.number()) {
            (Some(a), Some(b)) => a.len().cmp(&b.len()).then_with(|| a.cmp(b)),
            _ => Ordering::Equal,
        };
        match by_number {
            Ordering::Equal => self.this_update > other.this_update,
            o => o == Ordering::Greater,
        }
    }

    /// Whether it speaks for `cert` (RFC 5280 §6.3.3, as rustls-webpki reads it): its CA issued
    /// the certificate, and its scope, if any, includes the certificate's role (`end_entity`:
    /// the publisher; else a CA of the chain) and one of the certificate's CRL distribution
    /// point URIs, when the certificate names any.
    pub fn covers(&self, cert: &Cert, end_entity: bool) -> bool {
        if self.issuer_der != cert.issuer_der() {
            return false;
        }
        let Some(scope) = &self.scope else { return true };
        if scope.only_ca_certs && end_entity || scope.only_user_certs && !end_entity {
            return false;
        }
        match cert.crl_uris() {
            None => true,
            Some(uris) => uris.iter().any(|u| scope.uris.contains(u)),
        }
    }

    /// The CRL as PEM.
    pub fn to_pem(&self) -> String {
        crate::encoding::pem("X509 CRL", &self.der)
    }
}

impl Scope {
    fn parse(value: &[u8]) -> std::result::Result<Scope, String> {
        let idp = IssuingDistributionPoint::from_der(value)
            .map_err(|e| format!("its issuing distribution point: {e}"))?;
        let uris = match &idp.distribution_point {
            Some(DistributionPointName::FullName(names)) => names
                .iter()
                .filter_map(|n| match n {
                    GeneralName::UniformResourceIdentifier(u) => Some(u.to_string()),
                    _ => None,
                })
                .collect(),
            _ => Vec::new(),
        };
        Ok(Scope {
            der: value.to_vec(),
            only_user_certs: idp.only_contains_user_certs,
            only_ca_certs: idp.only_contains_ca_certs,
            uris,
        })
    }
}
