//! Certificates and signatures: parsing, thumbprints and subjects for logs, code-signing chain
//! checks against what the device trusts ([`Trust`]: roots, the disallowed store and
//! certificate revocation lists), and the ECDSA signatures on manifests.
//!
//! Chains are checked with rustls-webpki (the codeSigning extended key usage is required of the
//! publisher, and CRL signatures are verified by the issuer in the path); certificates and CRLs
//! are read with x509-parser for what people need to see in logs: subject, issuer, serial,
//! SHA-256 thumbprint, validity.

use std::path::Path;
use std::time::{Duration, SystemTime};

use ring::rand::SystemRandom;
use ring::signature::{
    ECDSA_P256_SHA256_ASN1_SIGNING, ECDSA_P384_SHA384_ASN1_SIGNING, EcdsaKeyPair,
};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use webpki::{EndEntityCert, KeyUsage};

use crate::clock;
use crate::error::{Error, Result};

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
    not_before: i64,
    not_after: i64,
    serial: Vec<u8>,
    is_ca: bool,
    code_signing: bool,
}

impl Cert {
    /// Parses a DER certificate. `source` names where it came from, for errors.
    pub fn from_der(der: Vec<u8>, source: &Path) -> Result<Cert> {
        let bad = |reason: String| Error::BadCertificate { path: source.to_path_buf(), reason };
        let (rest, x) = x509_parser::parse_x509_certificate(&der)
            .map_err(|e| bad(format!("not an X.509 certificate: {e}")))?;
        if !rest.is_empty() {
            return Err(bad(format!(
                "{} bytes of trailing data after the certificate",
                rest.len()
            )));
        }
        let subject = x.subject().to_string();
        let issuer = x.issuer().to_string();
        let not_before = x.validity().not_before.timestamp();
        let not_after = x.validity().not_after.timestamp();
        let is_ca = x.is_ca();
        let code_signing =
            matches!(x.extended_key_usage(), Ok(Some(eku)) if eku.value.code_signing);
        let thumbprint = sha256_hex(&der);
        let serial = x.raw_serial().to_vec();
        Ok(Cert {
            der: CertificateDer::from(der),
            thumbprint,
            subject: if subject.is_empty() { "(empty subject)".into() } else { subject },
            issuer,
            not_before,
            not_after,
            serial,
            is_ca,
            code_signing,
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

fn from_unix(secs: i64) -> SystemTime {
    if secs >= 0 {
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs as u64)
    } else {
        SystemTime::UNIX_EPOCH - Duration::from_secs(secs.unsigned_abs())
    }
}

fn base64_encode(data: &[u8]) -> String {
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

/// A certificate revocation list (RFC 5280) as a CA published it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Crl {
    der: Vec<u8>,
    issuer: String,
    revoked: Vec<Vec<u8>>,
    this_update: i64,
    next_update: Option<i64>,
    source: std::path::PathBuf,
}

/// The largest CRL file read.
pub const MAX_CRL_BYTES: u64 = 4 * 1024 * 1024;

impl Crl {
    /// Parses a DER CRL. `source` names where it came from, for errors.
    pub fn from_der(der: Vec<u8>, source: &Path) -> Result<Crl> {
        let bad = |reason: String| Error::CrlUnusable { path: source.to_path_buf(), reason };
        let (rest, crl) = x509_parser::parse_x509_crl(&der)
            .map_err(|e| bad(format!("not a certificate revocation list: {e}")))?;
        if !rest.is_empty() {
            return Err(bad(format!("{} bytes of trailing data", rest.len())));
        }
        webpki::BorrowedCertRevocationList::from_der(&der)
            .map_err(|e| bad(format!("not usable for revocation checks: {e:?}")))?;
        let revoked = crl.iter_revoked_certificates().map(|r| r.raw_serial().to_vec()).collect();
        let issuer = crl.issuer().to_string();
        let this_update = crl.last_update().timestamp();
        let next_update = crl.next_update().map(|t| t.timestamp());
        Ok(Crl { der, issuer, revoked, this_update, next_update, source: source.to_path_buf() })
    }

    /// Parses a file's CRLs: PEM (`BEGIN X509 CRL`, any number) or one DER CRL.
    pub fn parse(bytes: &[u8], source: &Path) -> Result<Vec<Crl>> {
        use rustls_pki_types::CertificateRevocationListDer;
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

    /// Whether its next update is past at `now`: its revocations still apply, but newer ones
    /// may be missing.
    pub fn is_stale(&self, now: SystemTime) -> bool {
        self.next_update.is_some_and(|n| n < clock::unix_secs(now) as i64)
    }

    /// Whether it revokes `cert`.
    pub fn revokes(&self, cert: &Cert) -> bool {
        self.issuer == cert.issuer && self.revoked.iter().any(|s| s == cert.serial())
    }

    /// The CRL as PEM.
    pub fn to_pem(&self) -> String {
        let b64 = base64_encode(&self.der);
        let mut out = String::from("-----BEGIN X509 CRL-----\n");
        for line in b64.as_bytes().chunks(64) {
            out.push_str(&String::from_utf8_lossy(line));
            out.push('\n');
        }
        out.push_str("-----END X509 CRL-----\n");
        out
    }
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
        .filter_map(|c| webpki::BorrowedCertRevocationList::from_der(&c.der).ok().map(Into::into))
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
        Ok(_) if publisher.is_code_signing() => Ok(()),
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
                    crl: format!("{}, issued by {}", l.source.display(), l.issuer),
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
            let list = chain.iter().find_map(|c| crls.iter().find(|l| l.issuer == c.issuer));
            Err(Error::CrlUnusable {
                path: list.map_or_else(|| source.to_path_buf(), |l| l.source.clone()),
                reason: format!("{e:?}; the chain of {} cannot be checked", publisher.subject),
            })
        }
        Err(e) => {
            Err(bad(format!("the chain of {} cannot be verified: {e:?}", publisher.subject())))
        }
    }
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
