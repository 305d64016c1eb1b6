//! Reading X.509 with RustCrypto's `x509-cert` and `der`, the one X.509 parser of every dm
//! program (the SCEP client's CMS messages are read with the same crates): names as people
//! read them, times, and the signed parts of a certificate or a revocation list, whose
//! signature is checked with the issuer's key by rustls-webpki's algorithms. Pure: no I/O.

use const_oid::ObjectIdentifier as Oid;
use der::asn1::{Any, BitStringRef};
use der::{Decode, Encode, Reader, SliceReader, Tag, Tagged};
use rustls_pki_types::{CertificateDer, SignatureVerificationAlgorithm};
use spki::AlgorithmIdentifierRef;
use x509_cert::attr::AttributeTypeAndValue;
use x509_cert::name::Name;
use x509_cert::time::Time;

/// basicConstraints.
pub const BASIC_CONSTRAINTS: Oid = Oid::new_unwrap("2.5.29.19");
/// extKeyUsage.
pub const EXT_KEY_USAGE: Oid = Oid::new_unwrap("2.5.29.37");
/// cRLDistributionPoints.
pub const CRL_DISTRIBUTION_POINTS: Oid = Oid::new_unwrap("2.5.29.31");
/// cRLNumber.
pub const CRL_NUMBER: Oid = Oid::new_unwrap("2.5.29.20");
/// deltaCRLIndicator.
pub const DELTA_CRL_INDICATOR: Oid = Oid::new_unwrap("2.5.29.27");
/// issuingDistributionPoint (x509-cert 0.2 gives its type the wrong OID: compare with this).
pub const ISSUING_DISTRIBUTION_POINT: Oid = Oid::new_unwrap("2.5.29.28");
/// The codeSigning extended key usage.
pub const KP_CODE_SIGNING: Oid = Oid::new_unwrap("1.3.6.1.5.5.7.3.3");
/// The clientAuth extended key usage.
pub const KP_CLIENT_AUTH: Oid = Oid::new_unwrap("1.3.6.1.5.5.7.3.2");

/// The attribute names people know, RFC 4514's and a few more.
const SHORT_NAMES: [(&str, &str); 15] = [
    ("2.5.4.3", "CN"),
    ("2.5.4.6", "C"),
    ("2.5.4.7", "L"),
    ("2.5.4.8", "ST"),
    ("2.5.4.9", "STREET"),
    ("2.5.4.10", "O"),
    ("2.5.4.11", "OU"),
    ("2.5.4.5", "serialNumber"),
    ("2.5.4.4", "SN"),
    ("2.5.4.42", "GN"),
    ("2.5.4.12", "title"),
    ("2.5.4.46", "dnQualifier"),
    ("0.9.2342.19200300.100.1.25", "DC"),
    ("0.9.2342.19200300.100.1.1", "UID"),
    ("1.2.840.113549.1.9.1", "emailAddress"),
];

/// A name as people read it: its attributes in the order the certificate holds them
/// (`CN=Contoso Publisher, O=Contoso`), RFC 4514's special characters and any control
/// character escaped with a backslash, so a name can neither forge another attribute nor
/// reach a terminal raw.
pub fn name_string(name: &Name) -> String {
    let mut out = String::new();
    for (i, rdn) in name.0.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        for (j, atv) in rdn.0.iter().enumerate() {
            if j > 0 {
                out.push_str(" + ");
            }
            push_attribute(&mut out, atv);
        }
    }
    out
}

fn push_attribute(out: &mut String, atv: &AttributeTypeAndValue) {
    let oid = atv.oid.to_string();
    match SHORT_NAMES.iter().find(|(o, _)| *o == oid) {
        Some((_, short)) => out.push_str(short),
        None => out.push_str(&oid),
    }
    out.push('=');
    match string_value(&atv.value) {
        Some(s) => escape_into(out, &s),
        None => {
            out.push('#');
            out.push_str(&crate::encoding::to_hex(&atv.value.to_der().unwrap_or_default()));
        }
    }
}

/// The text of a directory string, when it is one.
fn string_value(v: &Any) -> Option<String> {
    match v.tag() {
        Tag::PrintableString
        | Tag::Utf8String
        | Tag::Ia5String
        | Tag::TeletexString
        | Tag::VisibleString => std::str::from_utf8(v.value()).ok().map(str::to_string),
        Tag::BmpString if v.value().len() % 2 == 0 => {
            let units = v.value().chunks(2).map(|c| u16::from_be_bytes([c[0], c[1]]));
            char::decode_utf16(units).collect::<Result<String, _>>().ok()
        }
        _ => None,
    }
}

fn escape_into(out: &mut String, value: &str) {
    let last = value.chars().count().saturating_sub(1);
    for (i, c) in value.chars().enumerate() {
        match c {
            '#' if i == 0 => out.push_str("\\#"),
            ' ' if i == 0 || i == last => out.push_str("\\ "),
            '"' | '+' | ',' | ';' | '<' | '>' | '\\' | '=' => {
                out.push('\\');
                out.push(c);
            }
            c if c.is_control() => {
                let mut buf = [0u8; 4];
                for b in c.encode_utf8(&mut buf).bytes() {
                    out.push_str(&format!("\\{b:02x}"));
                }
            }
            c => out.push(c),
        }
    }
}

/// A time in Unix seconds.
pub fn unix(t: &Time) -> i64 {
    i64::try_from(t.to_unix_duration().as_secs()).unwrap_or(i64::MAX)
}

/// The three parts of a signed X.509 structure (a certificate or a revocation list): the
/// signed bytes exactly as they are in the file, the signature algorithm and the signature.
#[derive(Debug, Clone, Copy)]
pub struct Signed<'a> {
    /// The `tbsCertificate` or `tbsCertList`, tag and length included.
    pub tbs: &'a [u8],
    /// The signature algorithm.
    pub algorithm: Oid,
    /// The signature.
    pub signature: &'a [u8],
}

/// Splits a DER certificate or revocation list into its [`Signed`] parts.
pub fn signed_parts(der: &[u8]) -> der::Result<Signed<'_>> {
    let mut r = SliceReader::new(der)?;
    let (tbs, algorithm, signature) = r.sequence(|s| {
        let tbs = s.tlv_bytes()?;
        let alg = AlgorithmIdentifierRef::decode(s)?;
        let bits = BitStringRef::decode(s)?;
        Ok((tbs, alg.oid, bits))
    })?;
    r.finish(())?;
    let signature = signature.as_bytes().ok_or_else(|| Tag::BitString.value_error())?;
    Ok(Signed { tbs, algorithm, signature })
}

/// The webpki algorithms that may check a signature of this algorithm: the key decides which
/// of them applies.
fn algorithms(oid: &Oid) -> Vec<&'static dyn SignatureVerificationAlgorithm> {
    use webpki::ring as alg;
    match oid.to_string().as_str() {
        "1.2.840.10045.4.3.2" => vec![alg::ECDSA_P256_SHA256, alg::ECDSA_P384_SHA256],
        "1.2.840.10045.4.3.3" => vec![alg::ECDSA_P384_SHA384, alg::ECDSA_P256_SHA384],
        "1.2.840.113549.1.1.11" => vec![alg::RSA_PKCS1_2048_8192_SHA256],
        "1.2.840.113549.1.1.12" => vec![alg::RSA_PKCS1_2048_8192_SHA384],
        "1.2.840.113549.1.1.13" => vec![alg::RSA_PKCS1_2048_8192_SHA512],
        "1.3.101.112" => vec![alg::ED25519],
        _ => Vec::new(),
    }
}

/// Checks that `issuer`'s key made the signature of `signed`. The error says why not.
pub fn verify_signed(signed: &Signed<'_>, issuer: &CertificateDer<'_>) -> Result<(), String> {
    let algs = algorithms(&signed.algorithm);
    if algs.is_empty() {
        return Err(format!("its signature algorithm {} is not supported", signed.algorithm));
    }
    let key = webpki::EndEntityCert::try_from(issuer)
        .map_err(|e| format!("the issuer's certificate is unreadable: {e:?}"))?;
    if algs.into_iter().any(|a| key.verify_signature(a, signed.tbs, signed.signature).is_ok()) {
        Ok(())
    } else {
        Err("its signature does not verify with the issuer's key".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use x509_cert::name::RdnSequence;

    #[test]
    fn names_read_in_order_and_escaped() {
        let n = RdnSequence::from_der(
            &"CN=a\\,b,O=Contoso".parse::<RdnSequence>().unwrap().to_der().unwrap(),
        )
        .unwrap();
        // RFC 4514 strings list the last attribute first; a certificate holds O first here.
        assert_eq!(name_string(&n), "O=Contoso, CN=a\\,b");
        let ctrl = "CN=x\u{1b}[31m".parse::<RdnSequence>().unwrap();
        assert_eq!(name_string(&ctrl), "CN=x\\1b[31m");
    }

    #[test]
    fn garbage_has_no_signed_parts() {
        assert!(signed_parts(b"").is_err());
        assert!(signed_parts(&[0x30, 0x03, 1, 2, 3]).is_err());
        assert!(signed_parts(&[0x30, 0x00, 0x00]).is_err());
    }
}
