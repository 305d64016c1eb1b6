//! Certificate issuance for demos and tests: a root CA, code-signing publishers, TLS server
//! and client certificates. Behind the `devpki` feature, used by `dmpack dev-pki` and tests;
//! never part of a device binary. Keys are ECDSA P-256 in PKCS#8 PEM.

use std::time::SystemTime;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};

/// A certificate and its private key, both PEM.
#[derive(Debug, Clone)]
pub struct Issued {
    /// The certificate.
    pub cert_pem: String,
    /// The PKCS#8 private key.
    pub key_pem: String,
}

/// What a certificate is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Purpose {
    /// A certification authority.
    Ca,
    /// A software publisher: codeSigning.
    CodeSigning,
    /// A TLS server for these DNS names or IP addresses.
    Server(Vec<String>),
    /// A TLS client (its common name is the device's controller id).
    Client,
    /// No extended key usage at all: valid for nothing in particular (tests wrong usage).
    ServerAuthOnly,
}

/// What to issue.
#[derive(Debug, Clone)]
pub struct Spec {
    /// The subject's common name.
    pub common_name: String,
    /// Its purpose.
    pub purpose: Purpose,
    /// Start of validity.
    pub not_before: SystemTime,
    /// End of validity.
    pub not_after: SystemTime,
}

fn err(e: rcgen::Error) -> String {
    format!("certificate generation failed: {e}")
}

fn params(spec: &Spec) -> Result<CertificateParams, String> {
    let mut p = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, spec.common_name.clone());
    dn.push(DnType::OrganizationName, "dm demo");
    p.distinguished_name = dn;
    p.not_before = spec.not_before.into();
    p.not_after = spec.not_after.into();
    p.serial_number = Some(rcgen::SerialNumber::from_slice(&ring_random_serial()));
    p.use_authority_key_identifier_extension = true;
    match &spec.purpose {
        Purpose::Ca => {
            p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            p.key_usages = vec![
                KeyUsagePurpose::KeyCertSign,
                KeyUsagePurpose::CrlSign,
                KeyUsagePurpose::DigitalSignature,
            ];
        }
        Purpose::CodeSigning => {
            p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
            p.extended_key_usages = vec![ExtendedKeyUsagePurpose::CodeSigning];
        }
        Purpose::Server(names) => {
            p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
            p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
            for n in names {
                p.subject_alt_names.push(match n.parse::<std::net::IpAddr>() {
                    Ok(ip) => SanType::IpAddress(ip),
                    Err(_) => SanType::DnsName(n.clone().try_into().map_err(err)?),
                });
            }
        }
        Purpose::Client => {
            p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
            p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        }
        Purpose::ServerAuthOnly => {
            p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
            p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        }
    }
    Ok(p)
}

fn ring_random_serial() -> [u8; 16] {
    let mut s = [0u8; 16];
    let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut s);
    s[0] &= 0x7f; // positive
    s[0] |= 0x01; // no leading zero byte
    s
}

/// A self-signed root CA.
pub fn root_ca(spec: &Spec) -> Result<Issued, String> {
    let key = KeyPair::generate().map_err(err)?;
    let cert = params(spec)?.self_signed(&key).map_err(err)?;
    Ok(Issued { cert_pem: cert.pem(), key_pem: key.serialize_pem() })
}

/// A certificate issued by the CA `ca` whose subject also carries an organizational unit
/// `ou` before its common name (tests of subject parsing: an `OU` may hold any text).
pub fn issue_with_ou(ca: &Issued, spec: &Spec, ou: &str) -> Result<Issued, String> {
    let ca_key = KeyPair::from_pem(&ca.key_pem).map_err(err)?;
    let issuer = Issuer::from_ca_cert_pem(&ca.cert_pem, ca_key).map_err(err)?;
    let key = KeyPair::generate().map_err(err)?;
    let mut p = params(spec)?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationalUnitName, ou);
    dn.push(DnType::CommonName, spec.common_name.clone());
    p.distinguished_name = dn;
    let cert = p.signed_by(&key, &issuer).map_err(err)?;
    Ok(Issued { cert_pem: cert.pem(), key_pem: key.serialize_pem() })
}

/// A certificate issued by the CA `ca`.
pub fn issue(ca: &Issued, spec: &Spec) -> Result<Issued, String> {
    let ca_key = KeyPair::from_pem(&ca.key_pem).map_err(err)?;
    let issuer = Issuer::from_ca_cert_pem(&ca.cert_pem, ca_key).map_err(err)?;
    let key = KeyPair::generate().map_err(err)?;
    let cert = params(spec)?.signed_by(&key, &issuer).map_err(err)?;
    Ok(Issued { cert_pem: cert.pem(), key_pem: key.serialize_pem() })
}

/// A certificate revocation list from the CA `ca`, revoking the certificates whose serial
/// numbers (DER bytes) are given, current from `this_update` until `next_update`; as PEM.
pub fn crl(
    ca: &Issued,
    revoked: &[&[u8]],
    number: u64,
    this_update: SystemTime,
    next_update: SystemTime,
) -> Result<String, String> {
    crl_scoped(ca, revoked, number, (this_update, next_update), None)
}

/// The part of its CA's certificates a revocation list speaks for: its Issuing Distribution
/// Point.
#[derive(Debug, Clone, Default)]
pub struct ListScope {
    /// The distribution point's URIs.
    pub uris: Vec<String>,
    /// Only CA certificates.
    pub only_ca_certs: bool,
}

/// [`crl`] for the certificates `scope` names, current over `(this_update, next_update)`.
pub fn crl_scoped(
    ca: &Issued,
    revoked: &[&[u8]],
    number: u64,
    (this_update, next_update): (SystemTime, SystemTime),
    scope: Option<&ListScope>,
) -> Result<String, String> {
    use rcgen::{
        CertificateRevocationListParams, CrlDistributionPoint, CrlIssuingDistributionPoint,
        CrlScope, KeyIdMethod, RevocationReason, RevokedCertParams, SerialNumber,
    };
    let ca_key = KeyPair::from_pem(&ca.key_pem).map_err(err)?;
    let issuer = Issuer::from_ca_cert_pem(&ca.cert_pem, ca_key).map_err(err)?;
    let params = CertificateRevocationListParams {
        this_update: this_update.into(),
        next_update: next_update.into(),
        crl_number: SerialNumber::from(number),
        issuing_distribution_point: scope.map(|s| CrlIssuingDistributionPoint {
            distribution_point: CrlDistributionPoint { uris: s.uris.clone() },
            scope: s.only_ca_certs.then_some(CrlScope::CaCertsOnly),
        }),
        revoked_certs: revoked
            .iter()
            .map(|serial| RevokedCertParams {
                serial_number: SerialNumber::from_slice(serial),
                revocation_time: this_update.into(),
                reason_code: Some(RevocationReason::KeyCompromise),
                invalidity_date: None,
            })
            .collect(),
        key_identifier_method: KeyIdMethod::Sha256,
    };
    params.signed_by(&issuer).and_then(|c| c.pem()).map_err(err)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Error;
    use crate::pki::{self, Cert};
    use std::path::Path;
    use std::time::Duration;

    const DAY: Duration = Duration::from_secs(86_400);

    fn spec(cn: &str, purpose: Purpose, from: SystemTime, to: SystemTime) -> Spec {
        Spec { common_name: cn.into(), purpose, not_before: from, not_after: to }
    }

    struct Pki {
        root: Issued,
        publisher: Issued,
    }

    fn pki_now() -> (Pki, SystemTime) {
        let now = SystemTime::now();
        let root = root_ca(&spec("Demo Root", Purpose::Ca, now - DAY, now + 3650 * DAY)).unwrap();
        let publisher =
            issue(&root, &spec("Demo Publisher", Purpose::CodeSigning, now - DAY, now + 365 * DAY))
                .unwrap();
        (Pki { root, publisher }, now)
    }

    fn certs(pem: &str) -> Vec<Cert> {
        Cert::parse_pem(pem.as_bytes(), Path::new("test.pem")).unwrap()
    }

    #[test]
    fn issued_chain_verifies_and_signatures_check() {
        let (pki, now) = pki_now();
        let roots = crate::pki::Trust::roots(certs(&pki.root.cert_pem));
        let chain = certs(&pki.publisher.cert_pem);
        assert!(chain[0].subject().contains("CN=Demo Publisher"), "{}", chain[0].subject());
        assert!(roots.roots[0].is_ca() && !chain[0].is_ca());
        pki::verify_code_signing_chain(&chain, &roots, now, Path::new("p")).unwrap();
        let sig =
            pki::sign(pki.publisher.key_pem.as_bytes(), b"manifest bytes", Path::new("k")).unwrap();
        pki::verify_signature(&chain[0], b"manifest bytes", &sig, Path::new("m")).unwrap();
        let err =
            pki::verify_signature(&chain[0], b"manifest bytez", &sig, Path::new("m")).unwrap_err();
        assert!(matches!(err, Error::BadSignature { .. }), "{err}");
        // PEM written back parses to the same certificate.
        assert_eq!(certs(&chain[0].to_pem()), chain);
    }

    #[test]
    fn each_trust_failure_has_its_own_error() {
        let (pki, now) = pki_now();
        let roots = crate::pki::Trust::roots(certs(&pki.root.cert_pem));
        let p = Path::new("publisher.pem");

        let (other, _) = pki_now();
        let err = pki::verify_code_signing_chain(&certs(&other.publisher.cert_pem), &roots, now, p)
            .unwrap_err();
        assert!(matches!(err, Error::UntrustedPublisher { .. }), "{err}");
        assert_eq!(err.code(), crate::StatusCode::CERT_E_UNTRUSTEDROOT);

        let expired = issue(
            &pki.root,
            &spec("Old Publisher", Purpose::CodeSigning, now - 400 * DAY, now - 35 * DAY),
        )
        .unwrap();
        let err =
            pki::verify_code_signing_chain(&certs(&expired.cert_pem), &roots, now, p).unwrap_err();
        assert!(
            matches!(&err, Error::CertificateExpired { subject, .. } if subject.contains("Old Publisher")),
            "{err}"
        );

        let future = issue(
            &pki.root,
            &spec("Future Publisher", Purpose::CodeSigning, now + DAY, now + 400 * DAY),
        )
        .unwrap();
        let err =
            pki::verify_code_signing_chain(&certs(&future.cert_pem), &roots, now, p).unwrap_err();
        assert!(matches!(err, Error::CertificateExpired { .. }), "{err}");

        let server = issue(
            &pki.root,
            &spec("Not A Publisher", Purpose::ServerAuthOnly, now - DAY, now + DAY),
        )
        .unwrap();
        let err =
            pki::verify_code_signing_chain(&certs(&server.cert_pem), &roots, now, p).unwrap_err();
        assert!(matches!(err, Error::WrongUsage { .. }), "{err}");

        let err = pki::verify_code_signing_chain(
            &certs(&pki.publisher.cert_pem),
            &Default::default(),
            now,
            p,
        )
        .unwrap_err();
        assert!(matches!(err, Error::UntrustedPublisher { .. }), "{err}");
    }

    #[test]
    fn revoked_and_disallowed_certificates_are_never_trusted() {
        use crate::pki::{Crl, Trust};
        let (pki, now) = pki_now();
        let p = Path::new("publisher.pem");
        let chain = certs(&pki.publisher.cert_pem);
        let mut trust = Trust::roots(certs(&pki.root.cert_pem));
        let other =
            issue(&pki.root, &spec("Other", Purpose::CodeSigning, now - DAY, now + DAY)).unwrap();
        let other_serial = certs(&other.cert_pem)[0].serial().to_vec();

        // A CRL that revokes someone else changes nothing.
        let pem = crl(&pki.root, &[&other_serial], 1, now - DAY, now + DAY).unwrap();
        trust.crls = Crl::parse(pem.as_bytes(), Path::new("root.crl")).unwrap();
        pki::verify_code_signing_chain(&chain, &trust, now, p).unwrap();

        // One that revokes the publisher: refused, and the error names it and the list.
        let pem = crl(&pki.root, &[chain[0].serial()], 2, now - DAY, now + DAY).unwrap();
        trust.crls = Crl::parse(pem.as_bytes(), Path::new("root.crl")).unwrap();
        let err = pki::verify_code_signing_chain(&chain, &trust, now, p).unwrap_err();
        assert_eq!(err.code(), crate::StatusCode::CERT_E_REVOKED, "{err}");
        assert!(
            err.to_string().contains("Demo Publisher") && err.to_string().contains("root.crl"),
            "{err}"
        );

        // A stale list still revokes.
        let stale = crl(&pki.root, &[chain[0].serial()], 3, now - 30 * DAY, now - DAY).unwrap();
        trust.crls = Crl::parse(stale.as_bytes(), Path::new("old.crl")).unwrap();
        assert!(trust.crls[0].is_stale(now));
        let err = pki::verify_code_signing_chain(&chain, &trust, now, p).unwrap_err();
        assert_eq!(err.code(), crate::StatusCode::CERT_E_REVOKED, "{err}");

        // A list signed by another key with the same issuer name cannot be used.
        let (forger, _) = pki_now();
        let forged = crl(&forger.root, &[chain[0].serial()], 4, now - DAY, now + DAY).unwrap();
        trust.crls = Crl::parse(forged.as_bytes(), Path::new("forged.crl")).unwrap();
        let err = pki::verify_code_signing_chain(&chain, &trust, now, p).unwrap_err();
        assert_eq!(err.code(), crate::StatusCode::CRYPT_E_NO_REVOCATION_CHECK, "{err}");

        // Disallowed: the publisher itself, or the root it chains to.
        trust.crls.clear();
        trust.disallowed = chain.clone();
        let err = pki::verify_code_signing_chain(&chain, &trust, now, p).unwrap_err();
        assert_eq!(err.code(), crate::StatusCode::TRUST_E_EXPLICIT_DISTRUST, "{err}");
        trust.disallowed = trust.roots.clone();
        let err = pki::verify_code_signing_chain(&chain, &trust, now, p).unwrap_err();
        assert_eq!(err.code(), crate::StatusCode::TRUST_E_EXPLICIT_DISTRUST, "{err}");
        assert!(err.to_string().contains("Demo Root"), "{err}");
        assert!(Crl::parse(b"not a crl", Path::new("x.crl")).is_err());
    }

    #[test]
    fn intermediates_are_followed() {
        let (pki, now) = pki_now();
        let inter =
            issue(&pki.root, &spec("Demo Intermediate", Purpose::Ca, now - DAY, now + 365 * DAY))
                .unwrap();
        let leaf =
            issue(&inter, &spec("Leaf Publisher", Purpose::CodeSigning, now - DAY, now + 30 * DAY))
                .unwrap();
        let roots = crate::pki::Trust::roots(certs(&pki.root.cert_pem));
        let mut chain = certs(&leaf.cert_pem);
        let p = Path::new("p");
        assert!(matches!(
            pki::verify_code_signing_chain(&chain, &roots, now, p),
            Err(Error::UntrustedPublisher { .. })
        ));
        chain.extend(certs(&inter.cert_pem));
        pki::verify_code_signing_chain(&chain, &roots, now, p).unwrap();
    }
}
