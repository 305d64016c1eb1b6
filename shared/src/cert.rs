//! X.509 certificates as the device's trust checks and logs need them ([`Cert`]): read with
//! `x509-cert` ([`crate::x509`]), with the subject, issuer, serial, SHA-256 thumbprint and
//! validity people see, and the names (as DER), usages and CRL distribution points the rules
//! use. Below the revocation lists and the chain checks, which use them.

use std::path::Path;
use std::time::{Duration, SystemTime};

use der::{Decode, Encode};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

use crate::clock;
use crate::encoding::sha256_hex;
use crate::error::{Error, Result};
use crate::x509;

/// The largest PEM bundle read from a folder, a package or a store.
pub const MAX_PEM_BYTES: u64 = 256 * 1024;

/// A parsed X.509 certificate with what logs and stores need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cert {
    der: CertificateDer<'static>,
    thumbprint: String,
    subject: String,
    issuer: String,
    subject_der: Vec<u8>,
    issuer_der: Vec<u8>,
    not_before: i64,
    not_after: i64,
    serial: Vec<u8>,
    is_ca: bool,
    code_signing: bool,
    client_auth: bool,
    crl_uris: Option<Vec<String>>,
}

impl Cert {
    /// Parses a DER certificate. `source` names where it came from, for errors.
    pub fn from_der(der: Vec<u8>, source: &Path) -> Result<Cert> {
        let bad = |reason: String| Error::BadCertificate { path: source.to_path_buf(), reason };
        let x = x509_cert::Certificate::from_der(&der)
            .map_err(|e| bad(format!("not an X.509 certificate: {e}")))?;
        let tbs = &x.tbs_certificate;
        let subject = x509::name_string(&tbs.subject);
        let (is_ca, code_signing, client_auth, crl_uris) = extensions(tbs).map_err(bad)?;
        let name_der = |n: &x509_cert::name::Name| n.to_der().unwrap_or_default();
        Ok(Cert {
            thumbprint: sha256_hex(&der),
            subject: if subject.is_empty() { "(empty subject)".into() } else { subject },
            issuer: x509::name_string(&tbs.issuer),
            subject_der: name_der(&tbs.subject),
            issuer_der: name_der(&tbs.issuer),
            not_before: x509::unix(&tbs.validity.not_before),
            not_after: x509::unix(&tbs.validity.not_after),
            serial: tbs.serial_number.as_bytes().to_vec(),
            is_ca,
            code_signing,
            client_auth,
            crl_uris,
            der: CertificateDer::from(der),
        })
    }

    /// Parses every certificate in a PEM bundle, in order. A bundle without any certificate
    /// is an error.
    pub fn parse_pem(bytes: &[u8], source: &Path) -> Result<Vec<Cert>> {
        let mut certs = Vec::new();
        for item in CertificateDer::pem_slice_iter(bytes) {
            let der = item.map_err(|e| Error::BadCertificate {
                path: source.to_path_buf(),
                reason: format!("bad PEM: {e}"),
            })?;
            certs.push(Cert::from_der(der.to_vec(), source)?);
        }
        if certs.is_empty() {
            return Err(Error::BadCertificate {
                path: source.to_path_buf(),
                reason: "no CERTIFICATE block in the PEM file".into(),
            });
        }
        Ok(certs)
    }

    /// Reads a PEM bundle from a file (capped at [`MAX_PEM_BYTES`]).
    pub fn load_pem(path: &Path) -> Result<Vec<Cert>> {
        Cert::parse_pem(&crate::fs::read_capped(path, MAX_PEM_BYTES)?, path)
    }

    /// The certificate as PEM.
    pub fn to_pem(&self) -> String {
        crate::encoding::pem("CERTIFICATE", &self.der)
    }

    /// DER bytes.
    pub fn der(&self) -> &CertificateDer<'static> {
        &self.der
    }

    /// SHA-256 of the DER, lowercase hex: the name of the certificate's file in a store.
    pub fn thumbprint(&self) -> &str {
        &self.thumbprint
    }

    /// The subject, such as `CN=Contoso Publisher, O=Contoso`.
    pub fn subject(&self) -> &str {
        &self.subject
    }

    /// The issuer's name.
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// The serial number, as its DER bytes.
    pub fn serial(&self) -> &[u8] {
        &self.serial
    }

    /// Whether it is a certification authority.
    pub fn is_ca(&self) -> bool {
        self.is_ca
    }

    /// Whether its extended key usage names codeSigning.
    pub fn is_code_signing(&self) -> bool {
        self.code_signing
    }

    /// Whether its extended key usage names clientAuth.
    pub fn is_client_auth(&self) -> bool {
        self.client_auth
    }

    /// The subject's DER encoding, for exact comparisons (the text is for people).
    pub fn subject_der(&self) -> &[u8] {
        &self.subject_der
    }

    /// The issuer's DER encoding.
    pub fn issuer_der(&self) -> &[u8] {
        &self.issuer_der
    }

    /// The URIs of its CRL distribution points (those without a CRL issuer of their own or
    /// reasons); `None` when it names no distribution point.
    pub fn crl_uris(&self) -> Option<&[String]> {
        self.crl_uris.as_deref()
    }

    /// Whether `issuer` issued it: the names match and `issuer`'s key made its signature.
    pub fn is_issued_by(&self, issuer: &Cert) -> bool {
        self.issuer_der == issuer.subject_der
            && x509::signed_parts(&self.der)
                .is_ok_and(|s| x509::verify_signed(&s, &issuer.der).is_ok())
    }

    /// Start of validity.
    pub fn not_before(&self) -> SystemTime {
        from_unix(self.not_before)
    }

    /// End of validity.
    pub fn not_after(&self) -> SystemTime {
        from_unix(self.not_after)
    }

    /// When it expires, in Unix seconds.
    pub fn not_after_unix(&self) -> i64 {
        self.not_after
    }

    /// Whether `now` is inside the validity period.
    pub fn valid_at(&self, now: SystemTime) -> bool {
        let t = clock::unix_secs(now) as i64;
        self.not_before <= t && t <= self.not_after
    }

    /// One line for logs: subject, short thumbprint and expiry.
    pub fn describe(&self) -> String {
        format!(
            "{} (thumbprint {}…, issued by {}, valid until {})",
            self.subject,
            &self.thumbprint[..16],
            self.issuer,
            clock::rfc3339(self.not_after())
        )
    }

    pub(crate) fn expired_error(&self, now: SystemTime) -> Error {
        Error::CertificateExpired {
            subject: self.subject.clone(),
            not_before: clock::rfc3339(self.not_before()),
            not_after: clock::rfc3339(self.not_after()),
            now: clock::rfc3339(now),
        }
    }
}

/// What the extensions say: (CA, codeSigning, clientAuth, CRL distribution point URIs). An
/// extension the certificate holds but that does not parse is an error.
type Usage = (bool, bool, bool, Option<Vec<String>>);

fn extensions(tbs: &x509_cert::TbsCertificate) -> std::result::Result<Usage, String> {
    use x509_cert::ext::pkix::name::{DistributionPointName, GeneralName};
    use x509_cert::ext::pkix::{BasicConstraints, CrlDistributionPoints, ExtendedKeyUsage};
    let mut usage: Usage = (false, false, false, None);
    for ext in tbs.extensions.iter().flatten() {
        let value = ext.extn_value.as_bytes();
        let bad = |what: &'static str| move |e: der::Error| format!("its {what} extension: {e}");
        if ext.extn_id == x509::BASIC_CONSTRAINTS {
            usage.0 = BasicConstraints::from_der(value).map_err(bad("basic constraints"))?.ca;
        } else if ext.extn_id == x509::EXT_KEY_USAGE {
            let eku = ExtendedKeyUsage::from_der(value).map_err(bad("extended key usage"))?;
            usage.1 = eku.0.contains(&x509::KP_CODE_SIGNING);
            usage.2 = eku.0.contains(&x509::KP_CLIENT_AUTH);
        } else if ext.extn_id == x509::CRL_DISTRIBUTION_POINTS {
            let dps = CrlDistributionPoints::from_der(value).map_err(bad("CRL distribution"))?;
            let uris = dps
                .0
                .iter()
                .filter(|dp| dp.crl_issuer.is_none() && dp.reasons.is_none())
                .filter_map(|dp| match &dp.distribution_point {
                    Some(DistributionPointName::FullName(names)) => Some(names),
                    _ => None,
                })
                .flatten()
                .filter_map(|n| match n {
                    GeneralName::UniformResourceIdentifier(u) => Some(u.to_string()),
                    _ => None,
                });
            usage.3 = Some(uris.collect());
        }
    }
    Ok(usage)
}

fn from_unix(secs: i64) -> SystemTime {
    if secs >= 0 {
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs as u64)
    } else {
        SystemTime::UNIX_EPOCH - Duration::from_secs(secs.unsigned_abs())
    }
}
