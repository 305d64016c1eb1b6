//! Certificates and signatures: parsing, thumbprints and subjects for logs, code-signing chain
//! checks against what the device trusts ([`Trust`]: roots, the disallowed store and
//! certificate revocation lists), and the ECDSA signatures on manifests.
//!
//! Chains are checked with rustls-webpki (the codeSigning extended key usage is required of the
//! publisher, and CRL signatures are verified by the issuer in the path); certificates are read
//! with `x509-cert` ([`crate::x509`]) for what people need to see in logs (subject, issuer,
//! serial, SHA-256 thumbprint, validity) and what the trust rules need (names as DER, usages,
//! CRL distribution points). Revocation lists are [`crate::crl`]'s.

use std::path::Path;
use std::time::{Duration, SystemTime};

use der::{Decode, Encode};
use ring::rand::SystemRandom;
use ring::signature::{
    ECDSA_P256_SHA256_ASN1_SIGNING, ECDSA_P384_SHA384_ASN1_SIGNING, EcdsaKeyPair,
};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use webpki::{EndEntityCert, KeyUsage};

use crate::clock;
use crate::error::{Error, Result};
use crate::x509;

pub use crate::crl::{Crl, MAX_CRL_BYTES};

/// The codeSigning extended key usage, 1.3.6.1.5.5.7.3.3, DER-encoded without tag and length.
pub const CODE_SIGNING_EKU: &[u8] = &[0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x03, 0x03];

/// The largest PEM bundle read from a folder, a package or a store.
pub const MAX_PEM_BYTES: u64 = 256 * 1024;

/// Lowercase hexadecimal.
pub fn to_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[usize::from(b >> 4)] as char);
        s.push(DIGITS[usize::from(b & 15)] as char);
    }
    s
}

/// SHA-256 of `bytes`, lowercase hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    to_hex(ring::digest::digest(&ring::digest::SHA256, bytes).as_ref())
}

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
        let b64 = base64_encode(&self.der);
        let mut out = String::from("-----BEGIN CERTIFICATE-----\n");
        for line in b64.as_bytes().chunks(64) {
            out.push_str(&String::from_utf8_lossy(line));
            out.push('\n');
        }
        out.push_str("-----END CERTIFICATE-----\n");
        out
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

    fn expired_error(&self, now: SystemTime) -> Error {
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

pub(crate) fn base64_encode(data: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(T[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// What a device (or a management point) trusts for code signing: the roots publishers must
/// chain to, the certificates it never trusts (the `disallowed` store), and the CAs'
/// certificate revocation lists.
#[derive(Debug, Clone, Default)]
pub struct Trust {
    /// Roots a publisher must chain to.
    pub roots: Vec<Cert>,
    /// Certificates never trusted, even when they chain.
    pub disallowed: Vec<Cert>,
    /// Revocation lists.
    pub crls: Vec<Crl>,
}

impl Trust {
    /// Trust in `roots` alone.
    pub fn roots(roots: Vec<Cert>) -> Trust {
        Trust { roots, ..Trust::default() }
    }

    fn is_disallowed(&self, c: &Cert) -> bool {
        self.disallowed.iter().any(|d| d.thumbprint == c.thumbprint)
    }
}

/// Checks that `chain` (publisher first, then intermediates) chains to a root of `trust`, that
/// the publisher has the codeSigning extended key usage, that every certificate is valid at
/// `now`, and that none is revoked by a CRL of its issuer or in the disallowed store, root
/// included. `source` names the chain's file in errors.
pub fn verify_code_signing_chain(
    chain: &[Cert],
    trust: &Trust,
    now: SystemTime,
    source: &Path,
) -> Result<()> {
    if let Some(c) = chain.iter().find(|c| trust.is_disallowed(c)) {
        return Err(Error::Distrusted {
            subject: c.subject.clone(),
            thumbprint: c.thumbprint.clone(),
        });
    }
    let allowed: Vec<Cert> =
        trust.roots.iter().filter(|r| !trust.is_disallowed(r)).cloned().collect();
    let result = verify_chain(chain, &allowed, &trust.crls, now, source);
    if matches!(result, Err(Error::UntrustedPublisher { .. })) {
        // Say so when the chain ends at a root the device has disallowed.
        if let Some(root) = trust.roots.iter().find(|r| {
            trust.is_disallowed(r) && verify_chain(chain, &[(*r).clone()], &[], now, source).is_ok()
        }) {
            return Err(Error::Distrusted {
                subject: root.subject.clone(),
                thumbprint: root.thumbprint.clone(),
            });
        }
    }
    result
}

fn verify_chain(
    chain: &[Cert],
    roots: &[Cert],
    crls: &[Crl],
    now: SystemTime,
    source: &Path,
) -> Result<()> {
    let Some(publisher) = chain.first() else {
        return Err(Error::BadCertificate {
            path: source.to_path_buf(),
            reason: "no publisher certificate".into(),
        });
    };
    let bad = |reason: String| Error::BadCertificate { path: source.to_path_buf(), reason };
    // Name the expired certificate ourselves: webpki says only that one is.
    if let Some(c) = chain.iter().find(|c| !c.valid_at(now)) {
        return Err(c.expired_error(now));
    }
    let ee = EndEntityCert::try_from(publisher.der())
        .map_err(|e| bad(format!("{}: {e:?}", publisher.subject())))?;
    let anchors: Vec<_> =
        roots.iter().filter_map(|r| webpki::anchor_from_trusted_cert(r.der()).ok()).collect();
    let intermediates: Vec<CertificateDer<'_>> =
        chain[1..].iter().map(|c| c.der().clone()).collect();
    let time = UnixTime::since_unix_epoch(Duration::from_secs(clock::unix_secs(now)));
    let untrusted = || Error::UntrustedPublisher {
        subject: publisher.subject().to_string(),
        issuer: publisher.issuer().to_string(),
        thumbprint: publisher.thumbprint().to_string(),
    };
    if anchors.is_empty() {
        return Err(untrusted());
    }
    let lists: Vec<webpki::CertRevocationList<'_>> = crls
        .iter()
        .filter_map(|c| webpki::BorrowedCertRevocationList::from_der(c.der()).ok().map(Into::into))
        .collect();
    let list_refs: Vec<&webpki::CertRevocationList<'_>> = lists.iter().collect();
    // Unknown status is allowed (a CA without a CRL on the device), and a stale CRL still
    // applies: its revocations stand until a newer list arrives (docs/deployment-folder.md).
    let revocation = webpki::RevocationOptionsBuilder::new(&list_refs).ok().map(|b| {
        b.with_depth(webpki::RevocationCheckDepth::Chain)
            .with_status_policy(webpki::UnknownStatusPolicy::Allow)
            .with_expiration_policy(webpki::ExpirationPolicy::Ignore)
            .build()
    });
    // Intermediates may omit the extended key usage (if they have one it must allow code
    // signing); the publisher itself must name codeSigning, checked below.
    match ee.verify_for_usage(
        webpki::ALL_VERIFICATION_ALGS,
        &anchors,
        &intermediates,
        time,
        KeyUsage::required_if_present(CODE_SIGNING_EKU),
        revocation,
        None,
    ) {
        Ok(path) if publisher.is_code_signing() => {
            let on_path: Vec<CertificateDer<'_>> =
                path.intermediate_certificates().map(|c| c.der()).collect();
            let issuers = chain[1..].iter().filter(|c| on_path.contains(c.der()));
            std::iter::once((publisher, true))
                .chain(issuers.map(|c| (c, false)))
                .try_for_each(|(c, end_entity)| require_covered(c, end_entity, crls))
        }
        Ok(_) => Err(Error::WrongUsage { subject: publisher.subject().to_string() }),
        Err(webpki::Error::CertExpired { .. } | webpki::Error::CertNotValidYet { .. }) => {
            Err(chain
                .iter()
                .chain(roots)
                .find(|c| !c.valid_at(now))
                .unwrap_or(publisher)
                .expired_error(now))
        }
        Err(webpki::Error::RequiredEkuNotFoundContext(_)) => {
            Err(Error::WrongUsage { subject: publisher.subject().to_string() })
        }
        Err(webpki::Error::UnknownIssuer | webpki::Error::InvalidSignatureForPublicKey) => {
            Err(untrusted())
        }
        Err(webpki::Error::CertRevoked) => {
            let revoked =
                chain.iter().find_map(|c| crls.iter().find(|l| l.revokes(c)).map(|l| (c, l)));
            Err(match revoked {
                Some((c, l)) => Error::Revoked {
                    subject: c.subject.clone(),
                    serial: to_hex(&c.serial),
                    crl: format!("{}, issued by {}", l.source().display(), l.issuer()),
                },
                None => Error::Revoked {
                    subject: publisher.subject.clone(),
                    serial: to_hex(&publisher.serial),
                    crl: "a revocation list on the device".into(),
                },
            })
        }
        Err(
            e @ (webpki::Error::InvalidCrlSignatureForPublicKey
            | webpki::Error::IssuerNotCrlSigner
            | webpki::Error::UnsupportedCrlVersion
            | webpki::Error::UnsupportedDeltaCrl
            | webpki::Error::UnsupportedIndirectCrl
            | webpki::Error::UnsupportedCrlIssuingDistributionPoint
            | webpki::Error::UnsupportedCrlSignatureAlgorithmContext(_)
            | webpki::Error::UnsupportedCrlSignatureAlgorithmForPublicKeyContext(_)),
        ) => {
            let list = chain
                .iter()
                .find_map(|c| crls.iter().find(|l| l.covers(c, false) || l.covers(c, true)));
            Err(Error::CrlUnusable {
                path: list.map_or_else(|| source.to_path_buf(), |l| l.source().to_path_buf()),
                reason: format!("{e:?}; the chain of {} cannot be checked", publisher.subject),
            })
        }
        Err(e) => {
            Err(bad(format!("the chain of {} cannot be verified: {e:?}", publisher.subject())))
        }
    }
}

/// A certificate whose CA has revocation lists on the device, none of which covers it (each
/// narrowed by its Issuing Distribution Point to other certificates), cannot be checked: it
/// is refused, not taken as good. A CA with no list at all is not checked (unknown status is
/// allowed, docs/certificates.md).
fn require_covered(cert: &Cert, end_entity: bool, crls: &[Crl]) -> Result<()> {
    let mut of_its_ca = crls.iter().filter(|l| l.issuer_der() == cert.issuer_der()).peekable();
    let Some(first) = of_its_ca.peek().copied() else { return Ok(()) };
    if of_its_ca.any(|l| l.covers(cert, end_entity)) {
        return Ok(());
    }
    Err(Error::CrlUnusable {
        path: first.source().to_path_buf(),
        reason: format!(
            "the revocation lists of {} on the device are each narrowed to other certificates than {} (their issuing distribution point): its revocation cannot be checked",
            cert.issuer, cert.subject
        ),
    })
}

/// Verifies `signature` over `message` with the publisher certificate's public key.
pub fn verify_signature(
    publisher: &Cert,
    message: &[u8],
    signature: &[u8],
    path: &Path,
) -> Result<()> {
    let ee = EndEntityCert::try_from(publisher.der()).map_err(|e| Error::BadCertificate {
        path: path.to_path_buf(),
        reason: format!("{e:?}"),
    })?;
    let algs = [
        webpki::ring::ECDSA_P256_SHA256,
        webpki::ring::ECDSA_P384_SHA384,
        webpki::ring::ED25519,
        webpki::ring::RSA_PKCS1_2048_8192_SHA256,
        webpki::ring::RSA_PSS_2048_8192_SHA256_LEGACY_KEY,
    ];
    for alg in algs {
        match ee.verify_signature(alg, message, signature) {
            Ok(()) => return Ok(()),
            Err(webpki::Error::UnsupportedSignatureAlgorithmForPublicKeyContext(_)) => continue,
            Err(_) => break,
        }
    }
    Err(Error::BadSignature {
        path: path.to_path_buf(),
        publisher: publisher.subject().to_string(),
    })
}

/// Signs `message` with a PKCS#8 private key in PEM (`BEGIN PRIVATE KEY`): ECDSA P-256 or
/// P-384 (ASN.1 signatures), or RSA (PKCS#1 v1.5 with SHA-256), as the device's SCEP-enrolled
/// client keys are.
pub fn sign(key_pem: &[u8], message: &[u8], key_path: &Path) -> Result<Vec<u8>> {
    let bad = |reason: &str| Error::BadCertificate {
        path: key_path.to_path_buf(),
        reason: reason.to_string(),
    };
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|_| bad("not a PEM private key"))?;
    let PrivateKeyDer::Pkcs8(pkcs8) = key else {
        return Err(bad(
            "the key must be PKCS#8 (BEGIN PRIVATE KEY); convert it with `openssl pkcs8 -topk8 -nocrypt`",
        ));
    };
    let der = pkcs8.secret_pkcs8_der();
    let rng = SystemRandom::new();
    let ecdsa = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, der, &rng)
        .or_else(|_| EcdsaKeyPair::from_pkcs8(&ECDSA_P384_SHA384_ASN1_SIGNING, der, &rng));
    if let Ok(pair) = ecdsa {
        return pair
            .sign(&rng, message)
            .map(|s| s.as_ref().to_vec())
            .map_err(|_| bad("signing failed"));
    }
    let rsa = ring::rsa::KeyPair::from_pkcs8(der)
        .map_err(|_| bad("the key is not an ECDSA P-256 or P-384 key, nor an RSA key"))?;
    let mut sig = vec![0; rsa.public().modulus_len()];
    rsa.sign(&ring::signature::RSA_PKCS1_SHA256, &rng, message, &mut sig)
        .map_err(|_| bad("signing failed"))?;
    Ok(sig)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_and_base64() {
        assert_eq!(to_hex(&[0, 1, 0xab, 0xff]), "0001abff");
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(base64_encode(b""), "");
        assert_eq!(base64_encode(b"f"), "Zg==");
        assert_eq!(base64_encode(b"fo"), "Zm8=");
        assert_eq!(base64_encode(b"foo"), "Zm9v");
        assert_eq!(base64_encode(b"foobar"), "Zm9vYmFy");
    }

    #[test]
    fn garbage_is_a_bad_certificate_not_a_panic() {
        let p = Path::new("publisher.pem");
        assert!(matches!(Cert::parse_pem(b"", p), Err(Error::BadCertificate { .. })));
        assert!(matches!(
            Cert::parse_pem(b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n", p),
            Err(Error::BadCertificate { .. })
        ));
        assert!(matches!(
            Cert::from_der(vec![0x30, 0x03, 1, 2, 3], p),
            Err(Error::BadCertificate { .. })
        ));
        assert!(matches!(sign(b"nope", b"m", p), Err(Error::BadCertificate { .. })));
    }
}
