//! The messages of SCEP (RFC 8894), built and read with RustCrypto's `cms`, `x509-cert` and
//! `der`: the PKCS#10 request with its challenge, the transient self-signed certificate that
//! signs it, CMS EnvelopedData (RSA key transport; AES-128/256-CBC or 3DES out, and single DES
//! in, which some servers still answer with), CMS SignedData with the SCEP attributes, and the
//! CertRep, whose signature is checked against the CA's certificates. Pure: no I/O.

use std::time::{Duration, SystemTime};

use cms::cert::{CertificateChoices, IssuerAndSerialNumber};
use cms::content_info::{CmsVersion, ContentInfo};
use cms::enveloped_data::{
    EncryptedContentInfo, EnvelopedData, KeyTransRecipientInfo, RecipientIdentifier, RecipientInfo,
    RecipientInfos,
};
use cms::signed_data::{
    CertificateSet, EncapsulatedContentInfo, SignedData, SignerIdentifier, SignerInfo, SignerInfos,
};
use const_oid::ObjectIdentifier as Oid;
use der::asn1::{Any, AnyRef, BitString, OctetString, OctetStringRef, SetOfVec};
use der::{Decode, Encode, Reader, Sequence, SliceReader, Tag, Tagged};
use rand_core::{OsRng, RngCore};
use rsa::pkcs8::{DecodePublicKey, EncodePublicKey};
use rsa::{Pkcs1v15Encrypt, Pkcs1v15Sign, RsaPrivateKey, RsaPublicKey};
use spki::{AlgorithmIdentifierOwned, SubjectPublicKeyInfoOwned};
use x509_cert::attr::{Attribute, AttributeTypeAndValue};
use x509_cert::name::{Name, RdnSequence, RelativeDistinguishedName};
use x509_cert::request::{CertReq, CertReqInfo};
use x509_cert::serial_number::SerialNumber;
use x509_cert::time::{Time, Validity};
use x509_cert::{Certificate, TbsCertificate};
use zeroize::Zeroizing;

/// What went wrong, for the enrollment's error.
pub type Error = String;
/// Results of this module.
pub type Result<T> = std::result::Result<T, Error>;

fn e<E: std::fmt::Display>(ctx: &'static str) -> impl Fn(E) -> Error {
    move |err| format!("{ctx}: {err}")
}

// ---- OIDs -----------------------------------------------------------------
/// id-data.
pub const ID_DATA: Oid = Oid::new_unwrap("1.2.840.113549.1.7.1");
/// id-signedData.
pub const ID_SIGNED_DATA: Oid = Oid::new_unwrap("1.2.840.113549.1.7.2");
/// id-envelopedData.
pub const ID_ENVELOPED_DATA: Oid = Oid::new_unwrap("1.2.840.113549.1.7.3");
const ATTR_CONTENT_TYPE: Oid = Oid::new_unwrap("1.2.840.113549.1.9.3");
const ATTR_MESSAGE_DIGEST: Oid = Oid::new_unwrap("1.2.840.113549.1.9.4");
const ATTR_CHALLENGE_PASSWORD: Oid = Oid::new_unwrap("1.2.840.113549.1.9.7");
const RSA_ENCRYPTION: Oid = Oid::new_unwrap("1.2.840.113549.1.1.1");
const SHA1_WITH_RSA: Oid = Oid::new_unwrap("1.2.840.113549.1.1.5");
const SHA256_WITH_RSA: Oid = Oid::new_unwrap("1.2.840.113549.1.1.11");
const SHA1: Oid = Oid::new_unwrap("1.3.14.3.2.26");
const SHA256: Oid = Oid::new_unwrap("2.16.840.1.101.3.4.2.1");
const AES128_CBC: Oid = Oid::new_unwrap("2.16.840.1.101.3.4.1.2");
const AES256_CBC: Oid = Oid::new_unwrap("2.16.840.1.101.3.4.1.42");
const DES_EDE3_CBC: Oid = Oid::new_unwrap("1.2.840.113549.3.7");
const DES_CBC: Oid = Oid::new_unwrap("1.3.14.3.2.7");
const CN: Oid = Oid::new_unwrap("2.5.4.3");
/// SCEP messageType.
pub const SCEP_MESSAGE_TYPE: Oid = Oid::new_unwrap("2.16.840.1.113733.1.9.2");
/// SCEP pkiStatus.
pub const SCEP_PKI_STATUS: Oid = Oid::new_unwrap("2.16.840.1.113733.1.9.3");
/// SCEP failInfo.
pub const SCEP_FAIL_INFO: Oid = Oid::new_unwrap("2.16.840.1.113733.1.9.4");
/// SCEP senderNonce.
pub const SCEP_SENDER_NONCE: Oid = Oid::new_unwrap("2.16.840.1.113733.1.9.5");
/// SCEP recipientNonce.
pub const SCEP_RECIPIENT_NONCE: Oid = Oid::new_unwrap("2.16.840.1.113733.1.9.6");
/// SCEP transactionID.
pub const SCEP_TRANSACTION_ID: Oid = Oid::new_unwrap("2.16.840.1.113733.1.9.7");

/// The digests SCEP messages use, computed with ring (the device's one hash implementation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Hash {
    Sha256,
    Sha1,
}

impl Hash {
    fn digest(self, data: &[u8]) -> Vec<u8> {
        let alg = match self {
            Hash::Sha256 => &ring::digest::SHA256,
            Hash::Sha1 => &ring::digest::SHA1_FOR_LEGACY_USE_ONLY,
        };
        ring::digest::digest(alg, data).as_ref().to_vec()
    }

    /// PKCS#1 v1.5 signatures over this digest: its DigestInfo prefix (RFC 8017 §9.2).
    fn pkcs1v15(self) -> Pkcs1v15Sign {
        let (len, prefix): (usize, &[u8]) = match self {
            Hash::Sha256 => (
                32,
                &[
                    0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04,
                    0x02, 0x01, 0x05, 0x00, 0x04, 0x20,
                ],
            ),
            Hash::Sha1 => (
                20,
                &[
                    0x30, 0x21, 0x30, 0x09, 0x06, 0x05, 0x2b, 0x0e, 0x03, 0x02, 0x1a, 0x05, 0x00,
                    0x04, 0x14,
                ],
            ),
        };
        Pkcs1v15Sign { hash_len: Some(len), prefix: prefix.into() }
    }
}

fn alg(oid: Oid, null_params: bool) -> AlgorithmIdentifierOwned {
    AlgorithmIdentifierOwned { oid, parameters: if null_params { Some(Any::null()) } else { None } }
}

/// `n` random bytes.
pub fn random_bytes(n: usize) -> Vec<u8> {
    let mut v = vec![0u8; n];
    OsRng.fill_bytes(&mut v);
    v
}

/// Lowercase hexadecimal.
pub fn hex(b: &[u8]) -> String {
    dm_shared::pki::to_hex(b)
}

// ---- keys, names, certificates ---------------------------------------------

/// The SubjectPublicKeyInfo of a key.
pub fn spki_of(key: &RsaPublicKey) -> Result<SubjectPublicKeyInfoOwned> {
    let doc = key.to_public_key_der().map_err(e("encode public key"))?;
    SubjectPublicKeyInfoOwned::from_der(doc.as_bytes()).map_err(e("decode spki"))
}

/// A certificate's RSA public key.
pub fn cert_rsa_key(cert: &Certificate) -> Result<RsaPublicKey> {
    let der = cert.tbs_certificate.subject_public_key_info.to_der().map_err(e("spki"))?;
    RsaPublicKey::from_public_key_der(&der).map_err(e("certificate key is not RSA"))
}

/// transactionID: hex SHA-256 of the DER SubjectPublicKeyInfo (RFC 8894 §3.2.1.1
/// only requires a unique PrintableString; a key hash makes it stable per key).
pub fn transaction_id(key: &RsaPublicKey) -> Result<String> {
    let doc = key.to_public_key_der().map_err(e("encode public key"))?;
    Ok(hex(&Hash::Sha256.digest(doc.as_bytes())))
}

/// A name of one common name.
pub fn cn_name(cn: &str) -> Result<Name> {
    let atv = AttributeTypeAndValue {
        oid: CN,
        value: Any::new(Tag::Utf8String, cn.as_bytes()).map_err(e("cn"))?,
    };
    let rdn = RelativeDistinguishedName(SetOfVec::try_from(vec![atv]).map_err(e("rdn"))?);
    Ok(RdnSequence(vec![rdn]))
}

fn is_printable(s: &str) -> bool {
    s.bytes().all(|b| b.is_ascii_alphanumeric() || b" '()+,-./:=?".contains(&b))
}

fn sign_sha256(key: &RsaPrivateKey, data: &[u8]) -> Result<Vec<u8>> {
    key.sign(Hash::Sha256.pkcs1v15(), &Hash::Sha256.digest(data)).map_err(e("rsa sign"))
}

/// PKCS#10 CSR with subject and (optionally) the challengePassword attribute.
pub fn build_csr(key: &RsaPrivateKey, subject: Name, challenge: Option<&str>) -> Result<Vec<u8>> {
    let mut attributes = SetOfVec::new();
    if let Some(ch) = challenge {
        // DirectoryString: PrintableString when possible, else UTF8String.
        let tag = if is_printable(ch) { Tag::PrintableString } else { Tag::Utf8String };
        let v = Any::new(tag, ch.as_bytes()).map_err(e("challenge"))?;
        attributes
            .insert(Attribute {
                oid: ATTR_CHALLENGE_PASSWORD,
                values: SetOfVec::try_from(vec![v]).map_err(e("attr"))?,
            })
            .map_err(e("attr"))?;
    }
    let info = CertReqInfo {
        version: x509_cert::request::Version::V1,
        subject,
        public_key: spki_of(&key.to_public_key())?,
        attributes,
    };
    let sig = sign_sha256(key, &info.to_der().map_err(e("csr info"))?)?;
    CertReq {
        info,
        algorithm: alg(SHA256_WITH_RSA, true),
        signature: BitString::from_bytes(&sig).map_err(e("bitstring"))?,
    }
    .to_der()
    .map_err(e("csr"))
}

/// Transient self-signed certificate used to sign the PKCSReq (RFC 8894 §2.3).
pub fn self_signed(key: &RsaPrivateKey, subject: Name) -> Result<Certificate> {
    let now = SystemTime::now();
    let validity = (now - Duration::from_secs(3600), now + Duration::from_secs(30 * 86400));
    let tbs = tbs_certificate(&key.to_public_key(), subject.clone(), subject, validity, None)?;
    sign_certificate(tbs, key)
}

/// A certificate body for `key`, with a random serial number.
pub fn tbs_certificate(
    key: &RsaPublicKey,
    subject: Name,
    issuer: Name,
    (from, until): (SystemTime, SystemTime),
    extensions: Option<x509_cert::ext::Extensions>,
) -> Result<TbsCertificate> {
    let mut serial = random_bytes(8);
    serial[0] &= 0x7f;
    serial[0] |= 0x01; // positive, no leading zero
    Ok(TbsCertificate {
        version: x509_cert::certificate::Version::V3,
        serial_number: SerialNumber::new(&serial).map_err(e("serial"))?,
        signature: alg(SHA256_WITH_RSA, true),
        issuer,
        validity: Validity {
            not_before: Time::try_from(from).map_err(e("time"))?,
            not_after: Time::try_from(until).map_err(e("time"))?,
        },
        subject,
        subject_public_key_info: spki_of(key)?,
        issuer_unique_id: None,
        subject_unique_id: None,
        extensions,
    })
}

/// Signs a certificate body with `issuer_key` (SHA-256 with RSA).
pub fn sign_certificate(tbs: TbsCertificate, issuer_key: &RsaPrivateKey) -> Result<Certificate> {
    let sig = sign_sha256(issuer_key, &tbs.to_der().map_err(e("tbs"))?)?;
    Ok(Certificate {
        tbs_certificate: tbs,
        signature_algorithm: alg(SHA256_WITH_RSA, true),
        signature: BitString::from_bytes(&sig).map_err(e("bitstring"))?,
    })
}

fn ias(cert: &Certificate) -> IssuerAndSerialNumber {
    IssuerAndSerialNumber {
        issuer: cert.tbs_certificate.issuer.clone(),
        serial_number: cert.tbs_certificate.serial_number.clone(),
    }
}

/// Verify `cert` was signed by `issuer` (RSA PKCS#1 v1.5 with SHA-1/SHA-256).
pub fn verify_cert_signature(cert: &Certificate, issuer: &Certificate) -> Result<()> {
    let tbs = cert.tbs_certificate.to_der().map_err(e("tbs"))?;
    let sig = cert.signature.raw_bytes();
    let pk = cert_rsa_key(issuer)?;
    match cert.signature_algorithm.oid {
        SHA256_WITH_RSA => pk.verify(Hash::Sha256.pkcs1v15(), &Hash::Sha256.digest(&tbs), sig),
        SHA1_WITH_RSA => pk.verify(Hash::Sha1.pkcs1v15(), &Hash::Sha1.digest(&tbs), sig),
        o => return Err(format!("unsupported certificate signature algorithm {o}")),
    }
    .map_err(e("certificate signature"))
}

// ---- CA certificate handling ------------------------------------------------

/// certs-only ("degenerate") PKCS#7 SignedData -> certificates.
pub fn certs_from_degenerate(der: &[u8]) -> Result<Vec<Certificate>> {
    let ci = ContentInfo::from_der(der).map_err(e("degenerate pkcs7 ContentInfo"))?;
    if ci.content_type != ID_SIGNED_DATA {
        return Err(format!("expected signedData, got {}", ci.content_type));
    }
    let sd: SignedData = ci.content.decode_as().map_err(e("degenerate SignedData"))?;
    let mut out = Vec::new();
    if let Some(set) = sd.certificates {
        for c in set.0.into_vec() {
            if let CertificateChoices::Certificate(c) = c {
                out.push(c);
            }
        }
    }
    Ok(out)
}

// ---- EnvelopedData ----------------------------------------------------------

/// The content encryption of a request.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Cipher {
    /// AES-128-CBC.
    Aes128,
    /// AES-256-CBC.
    Aes256,
    /// 3DES-CBC (servers without AES).
    Des3,
}

fn cbc_encrypt(c: Cipher, key: &[u8], iv: &[u8], pt: &[u8]) -> Result<Vec<u8>> {
    use cbc::cipher::{BlockEncryptMut, KeyIvInit, block_padding::Pkcs7};
    let badk = |_| "bad content-encryption key or IV length".to_string();
    Ok(match c {
        Cipher::Aes128 => cbc::Encryptor::<aes::Aes128>::new_from_slices(key, iv)
            .map_err(badk)?
            .encrypt_padded_vec_mut::<Pkcs7>(pt),
        Cipher::Aes256 => cbc::Encryptor::<aes::Aes256>::new_from_slices(key, iv)
            .map_err(badk)?
            .encrypt_padded_vec_mut::<Pkcs7>(pt),
        Cipher::Des3 => cbc::Encryptor::<des::TdesEde3>::new_from_slices(key, iv)
            .map_err(badk)?
            .encrypt_padded_vec_mut::<Pkcs7>(pt),
    })
}

fn cbc_decrypt(oid: Oid, key: &[u8], iv: &[u8], ct: &[u8]) -> Result<Vec<u8>> {
    use cbc::cipher::{BlockDecryptMut, KeyIvInit, block_padding::Pkcs7};
    let bad = |_| "content decryption failed (wrong key or padding)".to_string();
    let badk = |_| "bad content-encryption key or IV length".to_string();
    match oid {
        AES128_CBC => cbc::Decryptor::<aes::Aes128>::new_from_slices(key, iv)
            .map_err(badk)?
            .decrypt_padded_vec_mut::<Pkcs7>(ct)
            .map_err(bad),
        AES256_CBC => cbc::Decryptor::<aes::Aes256>::new_from_slices(key, iv)
            .map_err(badk)?
            .decrypt_padded_vec_mut::<Pkcs7>(ct)
            .map_err(bad),
        DES_EDE3_CBC => cbc::Decryptor::<des::TdesEde3>::new_from_slices(key, iv)
            .map_err(badk)?
            .decrypt_padded_vec_mut::<Pkcs7>(ct)
            .map_err(bad),
        // Single DES: micromdm/scep 2.1.0 (go.mozilla.org/pkcs7 default) encrypts
        // the CertRep with DES-CBC whatever the request used. Decrypt-only.
        DES_CBC => cbc::Decryptor::<des::Des>::new_from_slices(key, iv)
            .map_err(badk)?
            .decrypt_padded_vec_mut::<Pkcs7>(ct)
            .map_err(bad),
        o => Err(format!("unsupported content-encryption algorithm {o}")),
    }
}

/// CMS EnvelopedData (ContentInfo DER) for one RSA key-transport recipient.
pub fn envelope(content: &[u8], recipient: &Certificate, c: Cipher) -> Result<Vec<u8>> {
    let (klen, blen, oid) = match c {
        Cipher::Aes128 => (16, 16, AES128_CBC),
        Cipher::Aes256 => (32, 16, AES256_CBC),
        Cipher::Des3 => (24, 8, DES_EDE3_CBC),
    };
    let key = Zeroizing::new(random_bytes(klen));
    let iv = random_bytes(blen);
    let ct = cbc_encrypt(c, &key, &iv, content)?;
    let ek = cert_rsa_key(recipient)?
        .encrypt(&mut OsRng, Pkcs1v15Encrypt, &key)
        .map_err(e("rsa key transport"))?;
    let ktri = KeyTransRecipientInfo {
        version: CmsVersion::V0,
        rid: RecipientIdentifier::IssuerAndSerialNumber(ias(recipient)),
        key_enc_alg: alg(RSA_ENCRYPTION, true),
        enc_key: OctetString::new(ek).map_err(e("octets"))?,
    };
    let ed = EnvelopedData {
        version: CmsVersion::V0,
        originator_info: None,
        recip_infos: RecipientInfos(
            SetOfVec::try_from(vec![RecipientInfo::Ktri(ktri)]).map_err(e("ri"))?,
        ),
        encrypted_content: EncryptedContentInfo {
            content_type: ID_DATA,
            content_enc_alg: AlgorithmIdentifierOwned {
                oid,
                parameters: Some(Any::new(Tag::OctetString, iv).map_err(e("iv"))?),
            },
            encrypted_content: Some(OctetString::new(ct).map_err(e("octets"))?),
        },
        unprotected_attrs: None,
    };
    ContentInfo {
        content_type: ID_ENVELOPED_DATA,
        content: Any::encode_from(&ed).map_err(e("ed"))?,
    }
    .to_der()
    .map_err(e("ContentInfo"))
}

/// Decrypt an EnvelopedData addressed to (my_cert, key).
///
/// Parsed by hand rather than with `cms::EnvelopedData::from_der`: go.mozilla.org/pkcs7
/// (micromdm/scep) encodes encryptedContent as a *constructed* `[0]` wrapping an
/// OCTET STRING (BER), which der 0.7's strict DER decoder rejects.
pub fn open_envelope(
    der: &[u8],
    my_cert: &Certificate,
    key: &RsaPrivateKey,
) -> Result<(Vec<u8>, String)> {
    let bad = |what: &'static str| move |err: der::Error| format!("EnvelopedData {what}: {err}");
    let ci = ContentInfo::from_der(der).map_err(e("envelope ContentInfo"))?;
    if ci.content_type != ID_ENVELOPED_DATA {
        return Err(format!("expected envelopedData, got {}", ci.content_type));
    }
    let mut r = SliceReader::new(ci.content.value()).map_err(bad("body"))?;
    let _version = AnyRef::decode(&mut r).map_err(bad("version"))?;
    let mut next = AnyRef::decode(&mut r).map_err(bad("recipientInfos"))?;
    if next.tag().is_context_specific() {
        next = AnyRef::decode(&mut r).map_err(bad("recipientInfos"))?; // skip originatorInfo
    }
    let ris = RecipientInfos::from_der(&next.to_der().map_err(bad("ri"))?)
        .map_err(bad("recipientInfos"))?;
    let eci = AnyRef::decode(&mut r).map_err(bad("encryptedContentInfo"))?;
    let mut er = SliceReader::new(eci.value()).map_err(bad("eci"))?;
    let _ct = Oid::decode(&mut er).map_err(bad("contentType"))?;
    let calg =
        AlgorithmIdentifierOwned::decode(&mut er).map_err(bad("contentEncryptionAlgorithm"))?;
    let ct = if er.is_finished() {
        return Err("EnvelopedData without encryptedContent".into());
    } else {
        let f = AnyRef::decode(&mut er).map_err(bad("encryptedContent"))?;
        if f.tag().is_constructed() {
            let mut out = Vec::new();
            let mut cr = SliceReader::new(f.value()).map_err(bad("encryptedContent"))?;
            while !cr.is_finished() {
                out.extend_from_slice(
                    OctetStringRef::decode(&mut cr).map_err(bad("encryptedContent"))?.as_bytes(),
                );
            }
            out
        } else {
            f.value().to_vec()
        }
    };

    let me = ias(my_cert);
    let mut ktris = ris.0.iter().filter_map(|r| match r {
        RecipientInfo::Ktri(k) => Some(k),
        _ => None,
    });
    let ktri = ktris
        .clone()
        .find(|k| matches!(&k.rid, RecipientIdentifier::IssuerAndSerialNumber(i) if *i == me))
        .or_else(|| ktris.next())
        .ok_or("no key-transport recipient in envelope")?;
    let cek = Zeroizing::new(
        key.decrypt(Pkcs1v15Encrypt, ktri.enc_key.as_bytes())
            .map_err(e("rsa key transport decrypt"))?,
    );
    let iv = calg
        .parameters
        .as_ref()
        .filter(|p| p.tag() == Tag::OctetString)
        .ok_or("content-encryption IV missing")?
        .value();
    let pt = cbc_decrypt(calg.oid, &cek, iv, &ct)?;
    let name = match calg.oid {
        AES128_CBC => "AES-128-CBC",
        AES256_CBC => "AES-256-CBC",
        DES_EDE3_CBC => "DES-EDE3-CBC",
        DES_CBC => "DES-CBC (single DES)",
        _ => "?",
    };
    Ok((pt, name.to_string()))
}

// ---- SignedData (pkiMessage) --------------------------------------------------

fn attr(oid: Oid, v: Any) -> Result<Attribute> {
    Ok(Attribute { oid, values: SetOfVec::try_from(vec![v]).map_err(e("attr"))? })
}

/// SCEP pkiMessage: SignedData over `econtent` (an EnvelopedData DER), signed
/// with SHA-256/RSA by `cert`/`key`, carrying the SCEP authenticated attributes.
pub fn signed_pki_message(
    econtent: &[u8],
    cert: &Certificate,
    key: &RsaPrivateKey,
    message_type: &str,
    transaction_id: &str,
    sender_nonce: &[u8],
) -> Result<Vec<u8>> {
    let ps = |s: &str| Any::new(Tag::PrintableString, s.as_bytes()).map_err(e("printable"));
    let attrs = vec![
        attr(ATTR_CONTENT_TYPE, Any::encode_from(&ID_DATA).map_err(e("oid"))?)?,
        attr(
            ATTR_MESSAGE_DIGEST,
            Any::new(Tag::OctetString, Hash::Sha256.digest(econtent)).map_err(e("md"))?,
        )?,
        attr(SCEP_MESSAGE_TYPE, ps(message_type)?)?,
        attr(SCEP_TRANSACTION_ID, ps(transaction_id)?)?,
        attr(SCEP_SENDER_NONCE, Any::new(Tag::OctetString, sender_nonce).map_err(e("nonce"))?)?,
    ];
    // SetOfVec sorts into DER order, so the bytes signed are the bytes sent.
    let signed_attrs: SetOfVec<Attribute> = SetOfVec::try_from(attrs).map_err(e("attrs"))?;
    let sig = sign_sha256(key, &signed_attrs.to_der().map_err(e("attrs"))?)?;
    let si = SignerInfo {
        version: CmsVersion::V1,
        sid: SignerIdentifier::IssuerAndSerialNumber(ias(cert)),
        digest_alg: alg(SHA256, true),
        signed_attrs: Some(signed_attrs),
        signature_algorithm: alg(RSA_ENCRYPTION, true),
        signature: OctetString::new(sig).map_err(e("sig"))?,
        unsigned_attrs: None,
    };
    let sd = SignedData {
        version: CmsVersion::V1,
        digest_algorithms: SetOfVec::try_from(vec![alg(SHA256, true)]).map_err(e("da"))?,
        encap_content_info: EncapsulatedContentInfo {
            econtent_type: ID_DATA,
            econtent: Some(Any::new(Tag::OctetString, econtent).map_err(e("econtent"))?),
        },
        certificates: Some(CertificateSet(
            SetOfVec::try_from(vec![CertificateChoices::Certificate(cert.clone())])
                .map_err(e("certs"))?,
        )),
        crls: None,
        signer_infos: SignerInfos(SetOfVec::try_from(vec![si]).map_err(e("si"))?),
    };
    ContentInfo { content_type: ID_SIGNED_DATA, content: Any::encode_from(&sd).map_err(e("sd"))? }
        .to_der()
        .map_err(e("ContentInfo"))
}

/// GetCertInitial / CertPoll (messageType 20) content: IssuerAndSubject.
#[derive(Sequence)]
pub struct IssuerAndSubject {
    /// The issuing CA.
    pub issuer: Name,
    /// The requested subject.
    pub subject: Name,
}

/// Raw signedAttrs of each SignerInfo, re-tagged as SET (0x31), exactly as the
/// sender signed them. (der 0.7's SetOfVec re-sorts on decode, so re-encoding
/// the decoded attributes would not reproduce a non-DER-sorted sender's bytes.)
fn raw_signed_attrs(sd_der: &[u8]) -> Result<Vec<Vec<u8>>> {
    let bad = |_: der::Error| "malformed SignedData".to_string();
    let sd = AnyRef::from_der(sd_der).map_err(bad)?;
    let mut r = SliceReader::new(sd.value()).map_err(bad)?;
    let mut last = None;
    while !r.is_finished() {
        last = Some(AnyRef::decode(&mut r).map_err(bad)?);
    }
    let infos = last.ok_or("empty SignedData")?;
    let mut out = Vec::new();
    let mut r = SliceReader::new(infos.value()).map_err(bad)?;
    while !r.is_finished() {
        let si = AnyRef::decode(&mut r).map_err(bad)?;
        let mut sr = SliceReader::new(si.value()).map_err(bad)?;
        let mut found = None;
        while !sr.is_finished() {
            let f = AnyRef::decode(&mut sr).map_err(bad)?;
            if f.tag() == (Tag::ContextSpecific { constructed: true, number: der::TagNumber::N0 }) {
                found = Some(AnyRef::new(Tag::Set, f.value()).map_err(bad)?.to_der().map_err(bad)?);
            }
        }
        out.push(found.ok_or("SignerInfo without signedAttrs")?);
    }
    Ok(out)
}

/// A verified SCEP pkiMessage (a CertRep).
#[derive(Debug)]
pub struct PkiMessage {
    /// messageType (`3`: CertRep).
    pub message_type: String,
    /// transactionID.
    pub transaction_id: String,
    /// pkiStatus: `0` SUCCESS, `2` FAILURE, `3` PENDING.
    pub pki_status: Option<String>,
    /// failInfo, with FAILURE.
    pub fail_info: Option<String>,
    /// senderNonce.
    pub sender_nonce: Option<Vec<u8>>,
    /// recipientNonce: must echo the request's senderNonce.
    pub recipient_nonce: Option<Vec<u8>>,
    /// eContent (for a CertRep SUCCESS: the EnvelopedData DER).
    pub econtent: Vec<u8>,
    /// The digest the CA signed with.
    pub digest_alg: &'static str,
    /// The CA or RA certificate that signed it.
    pub signer: Certificate,
}

fn attr_value(attrs: &SetOfVec<Attribute>, oid: Oid) -> Option<&Any> {
    attrs.iter().find(|a| a.oid == oid).and_then(|a| a.values.iter().next())
}

fn attr_string(attrs: &SetOfVec<Attribute>, oid: Oid) -> Option<String> {
    attr_value(attrs, oid).and_then(|v| String::from_utf8(v.value().to_vec()).ok())
}

/// Parse and verify a SCEP pkiMessage (CertRep). The signer must be one of
/// `trusted` (the certificates obtained with GetCACert).
pub fn parse_pki_message(der: &[u8], trusted: &[Certificate]) -> Result<PkiMessage> {
    let ci = ContentInfo::from_der(der).map_err(e("pkiMessage ContentInfo"))?;
    if ci.content_type != ID_SIGNED_DATA {
        return Err(format!("pkiMessage is not signedData but {}", ci.content_type));
    }
    let sd_der = ci.content.to_der().map_err(e("sd"))?;
    let sd = SignedData::from_der(&sd_der).map_err(e("SignedData"))?;
    let raw_attrs = raw_signed_attrs(&sd_der)?;
    let si = sd.signer_infos.0.iter().next().ok_or("pkiMessage has no SignerInfo")?;
    let attrs = si.signed_attrs.as_ref().ok_or("pkiMessage without signed attributes")?;

    // find signer certificate: must be one of the GetCACert certificates
    let SignerIdentifier::IssuerAndSerialNumber(sid) = &si.sid else {
        return Err("subjectKeyIdentifier signer ids not supported".into());
    };
    let signer = trusted
        .iter()
        .find(|c| ias(c) == *sid)
        .ok_or("CertRep signer is not a GetCACert certificate")?
        .clone();

    let econtent = match &sd.encap_content_info.econtent {
        Some(a) if a.tag() == Tag::OctetString => a.value().to_vec(),
        Some(a) => return Err(format!("unexpected eContent tag {} (BER-constructed?)", a.tag())),
        None => Vec::new(),
    };
    let md = attr_value(attrs, ATTR_MESSAGE_DIGEST).ok_or("no messageDigest")?.value();
    let pk = cert_rsa_key(&signer)?;
    let sig = si.signature.as_bytes();
    let (digest_alg, hash) = match si.digest_alg.oid {
        SHA256 => ("SHA-256", Hash::Sha256),
        SHA1 => ("SHA-1", Hash::Sha1),
        o => return Err(format!("unsupported digest algorithm {o}")),
    };
    let ok_md = hash.digest(&econtent) == md;
    let ok_sig = pk.verify(hash.pkcs1v15(), &hash.digest(&raw_attrs[0]), sig);
    if !ok_md {
        return Err("CertRep messageDigest mismatch".into());
    }
    ok_sig.map_err(e("CertRep signature invalid"))?;

    Ok(PkiMessage {
        message_type: attr_string(attrs, SCEP_MESSAGE_TYPE).ok_or("no messageType")?,
        transaction_id: attr_string(attrs, SCEP_TRANSACTION_ID).ok_or("no transactionID")?,
        pki_status: attr_string(attrs, SCEP_PKI_STATUS),
        fail_info: attr_string(attrs, SCEP_FAIL_INFO),
        sender_nonce: attr_value(attrs, SCEP_SENDER_NONCE).map(|v| v.value().to_vec()),
        recipient_nonce: attr_value(attrs, SCEP_RECIPIENT_NONCE).map(|v| v.value().to_vec()),
        econtent,
        digest_alg,
        signer,
    })
}

/// The name of a failInfo value.
pub fn fail_info_name(s: &str) -> &'static str {
    match s {
        "0" => "badAlg",
        "1" => "badMessageCheck",
        "2" => "badRequest",
        "3" => "badTime",
        "4" => "badCertID",
        _ => "unknown",
    }
}

/// SHA-256 of a certificate's DER, hexadecimal.
pub fn cert_fingerprint(c: &Certificate) -> Result<String> {
    Ok(hex(&Hash::Sha256.digest(&c.to_der().map_err(e("cert"))?)))
}

/// A certificate's subject, for people.
pub fn subject_string(c: &Certificate) -> String {
    c.tbs_certificate.subject.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelope_roundtrip_all_ciphers() {
        let key = RsaPrivateKey::new(&mut OsRng, 1024).unwrap();
        let cert = self_signed(&key, cn_name("t").unwrap()).unwrap();
        for c in [Cipher::Aes128, Cipher::Aes256, Cipher::Des3] {
            let env = envelope(b"hello scep", &cert, c).unwrap();
            let (pt, _) = open_envelope(&env, &cert, &key).unwrap();
            assert_eq!(pt, b"hello scep");
        }
    }

    #[test]
    fn signed_message_verifies() {
        let key = RsaPrivateKey::new(&mut OsRng, 1024).unwrap();
        let cert = self_signed(&key, cn_name("t").unwrap()).unwrap();
        let m = signed_pki_message(b"xyz", &cert, &key, "19", "abc", &[1; 16]).unwrap();
        let p = parse_pki_message(&m, std::slice::from_ref(&cert)).unwrap();
        assert_eq!(p.message_type, "19");
        assert_eq!(p.transaction_id, "abc");
        assert_eq!(p.sender_nonce.unwrap(), vec![1; 16]);
        assert_eq!(p.econtent, b"xyz");
        verify_cert_signature(&cert, &cert).unwrap();
    }
}
