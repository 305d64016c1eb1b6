//! Code-signing trust: chain checks against what the device trusts ([`Trust`]: roots, the
//! disallowed store and certificate revocation lists), and the signatures on manifests.
//!
//! Chains are checked with rustls-webpki (the codeSigning extended key usage is required of the
//! publisher, and CRL signatures are verified by the issuer in the path). Certificates are
//! [`crate::cert`]'s and revocation lists [`crate::crl`]'s; both are re-exported here.

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

pub use crate::cert::{Cert, MAX_PEM_BYTES};
pub use crate::encoding::{sha256_hex, to_hex};

pub use crate::crl::{Crl, MAX_CRL_BYTES};

/// The codeSigning extended key usage, 1.3.6.1.5.5.7.3.3, DER-encoded without tag and length.
pub const CODE_SIGNING_EKU: &[u8] = &[0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x03, 0x03];

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
        self.disallowed.iter().any(|d| d.thumbprint() == c.thumbprint())
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
            subject: c.subject().to_string(),
            thumbprint: c.thumbprint().to_string(),
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
                subject: root.subject().to_string(),
                thumbprint: root.thumbprint().to_string(),
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
                    subject: c.subject().to_string(),
                    serial: to_hex(c.serial()),
                    crl: format!("{}, issued by {}", l.source().display(), l.issuer()),
                },
                None => Error::Revoked {
                    subject: publisher.subject().to_string(),
                    serial: to_hex(publisher.serial()),
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
                reason: format!("{e:?}; the chain of {} cannot be checked", publisher.subject()),
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
            cert.issuer(),
            cert.subject()
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
        use crate::encoding::base64_encode;
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
