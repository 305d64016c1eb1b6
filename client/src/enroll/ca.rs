//! Which of a SCEP server's certificates the device trusts, and what the certificate it issues
//! must be (RFC 8894 §2.2, §3.5.1).
//!
//! `GetCACert` answers with the CA's certificate, or with the CA's and those of its
//! registration authorities (RAs). Only the CA is pinned (`ScepCaThumbprint`, or trusted on
//! first use), so an RA counts only when the CA issued it: the challenge is encrypted to the
//! CA or to such an RA, a CertRep must be signed by one of them, and anything else the server
//! presents is ignored, named in the log. The certificate that comes back must be the CA's,
//! valid now, usable for client authentication, and for the subject and key requested.

use std::time::SystemTime;

use log::warn;
use x509_cert::Certificate;
use x509_cert::ext::pkix::{BasicConstraints, ExtendedKeyUsage, KeyUsage};
use x509_cert::name::Name;

use super::cms;
use dm_shared::x509;

/// The CA and the RAs it issued, out of `GetCACert`'s certificates.
#[derive(Debug, Clone)]
pub struct ScepCa {
    /// The CA: the pinned certificate, or the one trusted on first use.
    pub ca: Certificate,
    /// The registration authorities the CA issued.
    pub ras: Vec<Certificate>,
}

/// Why the server's certificates cannot be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The pinned CA is not among them.
    NotPinned(String),
    /// No pin, and the certificates do not say which one is the CA.
    Ambiguous(String),
}

fn is_ca(c: &Certificate) -> bool {
    matches!(c.tbs_certificate.get::<BasicConstraints>(), Ok(Some((_, bc))) if bc.ca)
}

fn valid_at(c: &Certificate, now: SystemTime) -> bool {
    let t = dm_shared::clock::unix_secs(now) as i64;
    let v = &c.tbs_certificate.validity;
    x509::unix(&v.not_before) <= t && t <= x509::unix(&v.not_after)
}

/// Whether `ca` issued `cert`: the names match and `ca`'s key made the signature.
pub fn issued_by(cert: &Certificate, ca: &Certificate) -> bool {
    cert.tbs_certificate.issuer == ca.tbs_certificate.subject
        && cms::verify_cert_signature(cert, ca).is_ok()
}

impl ScepCa {
    /// Picks the CA out of `certs` (the one whose SHA-256 is `pin`; without a pin, the only
    /// CA certificate, or the one that issued the others) and keeps the RAs it issued that
    /// are valid at `now`. Every other certificate is logged and left out.
    pub fn choose(
        certs: &[Certificate],
        pin: Option<&str>,
        now: SystemTime,
    ) -> Result<ScepCa, Refusal> {
        let prints: Vec<String> =
            certs.iter().map(|c| cms::cert_fingerprint(c).unwrap_or_default()).collect();
        let ca = match pin {
            Some(p) => certs
                .iter()
                .zip(&prints)
                .find(|(_, f)| f.eq_ignore_ascii_case(p))
                .map(|(c, _)| c.clone())
                .ok_or_else(|| {
                    Refusal::NotPinned(format!(
                        "the SCEP server presents ({}), not the CA of ScepCaThumbprint {p}",
                        prints.join(", ")
                    ))
                })?,
            None => first_use(certs)?,
        };
        let mut ras = Vec::new();
        for c in certs.iter().filter(|c| **c != ca) {
            let subject = cms::subject_string(c);
            if !issued_by(c, &ca) {
                warn!(
                    "GetCACert presented {subject}, which the CA {} did not issue: not used",
                    cms::subject_string(&ca)
                );
            } else if !valid_at(c, now) {
                warn!("GetCACert presented the RA {subject}, which is not valid now: not used");
            } else if !is_ca(c) {
                ras.push(c.clone());
            }
        }
        Ok(ScepCa { ca, ras })
    }

    /// Who the request is encrypted to: an RA that may encipher keys, else the CA.
    pub fn recipient(&self) -> &Certificate {
        let enciphers = |c: &&Certificate| match c.tbs_certificate.get::<KeyUsage>() {
            Ok(Some((_, ku))) => ku.key_encipherment(),
            Ok(None) => true,
            Err(_) => false,
        };
        self.ras.iter().find(enciphers).unwrap_or(&self.ca)
    }

    /// The certificates that may sign a CertRep: the CA and its RAs.
    pub fn signers(&self) -> Vec<Certificate> {
        std::iter::once(self.ca.clone()).chain(self.ras.iter().cloned()).collect()
    }
}

/// The CA trusted on first use: the only CA certificate, or the only one that issued
/// another of the certificates.
fn first_use(certs: &[Certificate]) -> Result<Certificate, Refusal> {
    if let [only] = certs {
        return Ok(only.clone());
    }
    let cas: Vec<&Certificate> = certs.iter().filter(|c| is_ca(c)).collect();
    if let [only] = cas.as_slice() {
        return Ok((*only).clone());
    }
    let issuing: Vec<&&Certificate> =
        cas.iter().filter(|ca| certs.iter().any(|c| !is_ca(c) && issued_by(c, ca))).collect();
    match issuing.as_slice() {
        [only] => Ok((**only).clone()),
        _ => Err(Refusal::Ambiguous(format!(
            "the SCEP server presents {} certificates and no single CA among them; set ScepCaThumbprint",
            certs.len()
        ))),
    }
}

/// Checks the certificate a CertRep delivers: issued by the CA, valid at `now`, usable for
/// client authentication (when it names extended key usages, clientAuth is one), with the
/// requested subject's common name and the requested key. The error says which check failed.
pub fn check_issued(
    issued: &Certificate,
    ca: &Certificate,
    subject: &Name,
    key: &spki::SubjectPublicKeyInfoOwned,
    now: SystemTime,
) -> Result<(), String> {
    let tbs = &issued.tbs_certificate;
    if tbs.subject_public_key_info != *key {
        return Err("the issued certificate is not for this device's key".into());
    }
    if !issued_by(issued, ca) {
        return Err(format!(
            "the issued certificate was not issued by the CA {}",
            cms::subject_string(ca)
        ));
    }
    if !valid_at(issued, now) {
        return Err(format!(
            "the issued certificate is valid from {} to {}, not now",
            x509::unix(&tbs.validity.not_before),
            x509::unix(&tbs.validity.not_after)
        ));
    }
    match tbs.get::<ExtendedKeyUsage>() {
        Ok(Some((_, eku))) if !eku.0.contains(&x509::KP_CLIENT_AUTH) => {
            return Err("the issued certificate is not for client authentication".into());
        }
        Err(e) => return Err(format!("the issued certificate's extended key usage: {e}")),
        _ => {}
    }
    let wanted = common_names(subject);
    let got = common_names(&tbs.subject);
    if got.len() != 1 || got != wanted {
        return Err(format!(
            "the issued certificate is for {}, not the requested {}",
            x509::name_string(&tbs.subject),
            x509::name_string(subject)
        ));
    }
    Ok(())
}

/// The common names of a name, as text (a CA may re-encode a UTF8String as a
/// PrintableString).
fn common_names(name: &Name) -> Vec<String> {
    const CN: const_oid::ObjectIdentifier = const_oid::ObjectIdentifier::new_unwrap("2.5.4.3");
    name.0
        .iter()
        .flat_map(|rdn| rdn.0.iter())
        .filter(|atv| atv.oid == CN)
        .map(|atv| String::from_utf8_lossy(atv.value.value()).into_owned())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use der::Encode;
    use der::asn1::OctetString;
    use rsa::RsaPrivateKey;
    use std::time::Duration;
    use x509_cert::ext::Extension;

    const HOUR: Duration = Duration::from_secs(3600);

    struct Party {
        key: RsaPrivateKey,
        cert: Certificate,
    }

    fn ext(oid: &str, critical: bool, value: impl Encode) -> Extension {
        Extension {
            extn_id: const_oid::ObjectIdentifier::new_unwrap(oid),
            critical,
            extn_value: OctetString::new(value.to_der().unwrap()).unwrap(),
        }
    }

    /// A certificate for a new key, issued by `by` (self-signed when `None`), a CA or not,
    /// with these extended key usages (none: no extension), valid over `valid`.
    fn party(
        cn: &str,
        by: Option<&Party>,
        ca: bool,
        eku: &[const_oid::ObjectIdentifier],
        valid: (SystemTime, SystemTime),
    ) -> Party {
        let key = RsaPrivateKey::new(&mut rand_core::OsRng, 1024).unwrap();
        let subject = cms::cn_name(cn).unwrap();
        let issuer = by.map_or(subject.clone(), |b| b.cert.tbs_certificate.subject.clone());
        let mut exts =
            vec![ext("2.5.29.19", true, BasicConstraints { ca, path_len_constraint: None })];
        if !eku.is_empty() {
            exts.push(ext("2.5.29.37", false, ExtendedKeyUsage(eku.to_vec())));
        }
        let tbs =
            cms::tbs_certificate(&key.to_public_key(), subject, issuer, valid, Some(exts)).unwrap();
        let cert = cms::sign_certificate(tbs, by.map_or(&key, |b| &b.key)).unwrap();
        Party { key, cert }
    }

    fn now_valid() -> (SystemTime, SystemTime) {
        let now = SystemTime::now();
        (now - HOUR, now + 24 * HOUR)
    }

    fn print(c: &Certificate) -> String {
        cms::cert_fingerprint(c).unwrap()
    }

    /// The review's attack: the server (or anyone on an `http://` path) adds its own "RA"
    /// certificate beside the pinned CA. Before, the challenge was encrypted to it and a
    /// CertRep it signed was taken. Now only certificates the pinned CA issued are used.
    #[test]
    fn an_extra_ra_certificate_cannot_bypass_the_ca_pin() {
        let ca = party("CA", None, true, &[], now_valid());
        let ra = party("RA", Some(&ca), false, &[], now_valid());
        let rogue = party("RA", None, false, &[], now_valid());
        let offered = [ca.cert.clone(), rogue.cert.clone()];
        let chosen = ScepCa::choose(&offered, Some(&print(&ca.cert)), SystemTime::now()).unwrap();
        assert_eq!(chosen.ca, ca.cert);
        assert!(chosen.ras.is_empty(), "the rogue RA is not used");
        assert_eq!(chosen.recipient(), &ca.cert, "the challenge goes to the CA");

        // A CertRep the rogue signed is refused; one the CA's real RA signed is taken.
        let offered = [rogue.cert.clone(), ca.cert.clone(), ra.cert.clone()];
        let chosen = ScepCa::choose(&offered, Some(&print(&ca.cert)), SystemTime::now()).unwrap();
        assert_eq!(chosen.ras, vec![ra.cert.clone()]);
        assert_eq!(chosen.recipient(), &ra.cert);
        let forged =
            cms::signed_pki_message(b"x", &rogue.cert, &rogue.key, "3", "t", &[1; 16]).unwrap();
        assert!(cms::parse_pki_message(&forged, &chosen.signers()).is_err());
        let real = cms::signed_pki_message(b"x", &ra.cert, &ra.key, "3", "t", &[1; 16]).unwrap();
        assert!(cms::parse_pki_message(&real, &chosen.signers()).is_ok());
    }

    #[test]
    fn the_pin_and_first_use_pick_the_ca() {
        let ca = party("CA", None, true, &[], now_valid());
        let root = party("Root", None, true, &[], now_valid());
        let ra = party("RA", Some(&ca), false, &[], now_valid());
        let now = SystemTime::now();
        let err = ScepCa::choose(std::slice::from_ref(&ca.cert), Some(&"0".repeat(64)), now);
        assert!(matches!(err, Err(Refusal::NotPinned(_))));
        // First use: the one certificate; the one CA; the CA that issued the RA.
        let one = ScepCa::choose(std::slice::from_ref(&ca.cert), None, now).unwrap();
        assert_eq!(one.ca, ca.cert);
        let chain = [root.cert.clone(), ca.cert.clone(), ra.cert.clone()];
        assert_eq!(ScepCa::choose(&chain, None, now).unwrap().ca, ca.cert);
        let two_cas = [root.cert.clone(), ca.cert.clone()];
        assert!(matches!(ScepCa::choose(&two_cas, None, now), Err(Refusal::Ambiguous(_))));
        // An RA of the CA that is expired is not used.
        let old = party("Old RA", Some(&ca), false, &[], (now - 48 * HOUR, now - HOUR));
        let chosen = ScepCa::choose(&[ca.cert.clone(), old.cert], Some(&print(&ca.cert)), now);
        assert!(chosen.unwrap().ras.is_empty());
    }

    /// What a CertRep delivers is checked: the CA's, current, for client authentication, for
    /// the requested subject and key.
    #[test]
    fn the_issued_certificate_is_checked() {
        let ca = party("CA", None, true, &[], now_valid());
        let other_ca = party("CA", None, true, &[], now_valid());
        let client = [x509::KP_CLIENT_AUTH];
        let good = party("dev-1", Some(&ca), false, &client, now_valid());
        let subject = cms::cn_name("dev-1").unwrap();
        let key = |p: &Party| p.cert.tbs_certificate.subject_public_key_info.clone();
        let now = SystemTime::now();
        check_issued(&good.cert, &ca.cert, &subject, &key(&good), now).unwrap();
        let no_eku = party("dev-1", Some(&ca), false, &[], now_valid());
        check_issued(&no_eku.cert, &ca.cert, &subject, &key(&no_eku), now).unwrap();

        let refused = |p: &Party, by: &Party, subject: &Name| {
            check_issued(&p.cert, &by.cert, subject, &key(p), now).unwrap_err()
        };
        let err = refused(&good, &other_ca, &subject);
        assert!(err.contains("not issued by the CA"), "{err}");
        let server = party("dev-1", Some(&ca), false, &[x509::KP_CODE_SIGNING], now_valid());
        assert!(refused(&server, &ca, &subject).contains("client authentication"));
        let expired = party("dev-1", Some(&ca), false, &client, (now - 48 * HOUR, now - HOUR));
        assert!(refused(&expired, &ca, &subject).contains("not now"));
        let victim = party("victim", Some(&ca), false, &client, now_valid());
        assert!(refused(&victim, &ca, &subject).contains("not the requested"));
        let err = check_issued(&good.cert, &ca.cert, &subject, &key(&victim), now).unwrap_err();
        assert!(err.contains("key"), "{err}");
    }
}
