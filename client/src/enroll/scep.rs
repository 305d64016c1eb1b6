//! The SCEP conversation (RFC 8894) over HTTP: `GetCACaps`, `GetCACert` (one CA certificate,
//! or a CA and RA chain as a certs-only PKCS#7), and `PKIOperation` (POST when the server says
//! it takes it, else GET), then a PKCSReq or RenewalReq and its CertRep: SUCCESS, FAILURE with
//! its failInfo, or PENDING, polled with `GetCertInitial` and a growing wait until a deadline.
//! Every answer is capped in size, every call has a deadline, and a CertRep counts only when a
//! CA certificate signed it for this transaction and echoes this request's nonce.

use std::time::{Duration, Instant};

use der::{Decode, Encode};
use log::{info, warn};
use rsa::RsaPrivateKey;
use x509_cert::Certificate;
use x509_cert::name::Name;

use super::ca::{self, ScepCa};
use super::cms::{self, Cipher};
use crate::error::{Error, Result};
use dm_shared::StatusCode;

/// The largest answer read from a SCEP server.
const MAX_BODY: u64 = 1024 * 1024;

/// How many times a call that found the server unreachable (or busy: 5xx, 429) is made.
const ATTEMPTS: u32 = 4;

/// Whether a failed call is worth making again: the server down, slow or overloaded.
fn transient(e: &Error) -> bool {
    matches!(e, Error::Network { .. } | Error::Http { status: 429 | 500..=599, .. })
}

/// Makes `call` up to [`ATTEMPTS`] times while it fails transiently, waiting between half and
/// all of 2, 4, 8 s between attempts (random, so a fleet does not retry in step).
fn with_retries<T>(what: &str, url: &str, mut call: impl FnMut() -> Result<T>) -> Result<T> {
    let mut attempt = 1;
    loop {
        match call() {
            Err(e) if transient(&e) && attempt < ATTEMPTS => {
                let wait = crate::agent::timing::backoff(attempt, Duration::from_secs(8), None);
                warn!(
                    "{what} to {url} failed (attempt {attempt} of {ATTEMPTS}): {e}; trying again in {} ms",
                    wait.as_millis()
                );
                std::thread::sleep(wait);
                attempt += 1;
            }
            other => return other,
        }
    }
}

fn protocol(reason: impl Into<String>) -> Error {
    Error::Enrollment { code: StatusCode::DM_E_ENROLL_PROTOCOL, reason: reason.into() }
}

/// A SCEP server and what it said it can do.
pub struct Server {
    url: String,
    agent: ureq::Agent,
    caps: Vec<String>,
}

/// What a certificate request came to.
#[derive(Debug)]
pub enum Reply {
    /// The certificate, for the request's key.
    Issued(Box<Certificate>),
    /// Refused, with the failInfo.
    Failed(String),
    /// Waiting for a person at the CA.
    Pending,
}

/// A request to send: what is enveloped, who signs it, and as which message type.
pub struct Request<'a> {
    /// The enveloped content: a PKCS#10 request, or IssuerAndSubject for GetCertInitial.
    pub inner: &'a [u8],
    /// The certificate that signs it (the transient self-signed one, or the current one).
    pub signer_cert: &'a Certificate,
    /// Its key.
    pub signer_key: &'a RsaPrivateKey,
    /// `19` PKCSReq, `17` RenewalReq, `20` GetCertInitial.
    pub message_type: &'a str,
    /// The transaction's id.
    pub transaction_id: &'a str,
}

impl Server {
    /// Opens the conversation with the server at `url`: asks what it can do.
    pub fn connect(url: &str, agent: ureq::Agent) -> Result<Server> {
        let mut s = Server { url: url.to_string(), agent, caps: Vec::new() };
        match s.get("GetCACaps", None) {
            Ok((_, body)) => {
                let text = String::from_utf8_lossy(&body).into_owned();
                s.caps = text.split_whitespace().map(str::to_string).collect();
                info!("SCEP server {url} can: {}", s.caps.join(", "));
            }
            // Unreachable even after retries: no use going on.
            Err(e) if transient(&e) => return Err(e),
            Err(e) => warn!(
                "SCEP server {url} says nothing of what it can do ({e}); assuming the minimum"
            ),
        }
        Ok(s)
    }

    /// Whether the server named this capability.
    pub fn can(&self, cap: &str) -> bool {
        self.caps.iter().any(|c| c.eq_ignore_ascii_case(cap))
    }

    /// `GET …?operation=OP[&message=…]`: (content type, body).
    fn get(&self, op: &str, message: Option<&str>) -> Result<(String, Vec<u8>)> {
        with_retries(op, &self.url, || {
            let mut req = self.agent.get(&self.url).query("operation", op);
            if let Some(m) = message {
                req = req.query("message", m);
            }
            let resp = req.call().map_err(|e| transport(&self.url, e))?;
            self.read(op, resp)
        })
    }

    fn read(
        &self,
        op: &str,
        mut resp: ureq::http::Response<ureq::Body>,
    ) -> Result<(String, Vec<u8>)> {
        let status = resp.status().as_u16();
        let ctype = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_ascii_lowercase();
        let body = resp
            .body_mut()
            .with_config()
            .limit(MAX_BODY)
            .read_to_vec()
            .map_err(|e| transport(&self.url, e))?;
        if status != 200 {
            let text: String = String::from_utf8_lossy(&body)
                .chars()
                .filter(|c| !c.is_control())
                .take(200)
                .collect();
            return Err(Error::Http {
                url: self.url.clone(),
                status,
                retry_after: None,
                message: format!("{op}: {text}"),
            });
        }
        Ok((ctype, body))
    }

    /// The CA's certificates (and the RA's, when there is one).
    pub fn ca_certs(&self) -> Result<Vec<Certificate>> {
        let (ctype, body) = self.get("GetCACert", None)?;
        let kind = ctype.split(';').next().unwrap_or("").trim().to_string();
        let certs = match kind.as_str() {
            "application/x-x509-ca-ra-cert" => {
                cms::certs_from_degenerate(&body).map_err(protocol)?
            }
            "application/x-x509-ca-cert" => {
                vec![
                    Certificate::from_der(&body)
                        .map_err(|e| protocol(format!("GetCACert: {e}")))?,
                ]
            }
            // Servers that name the type wrongly: the bytes say which.
            _ => match Certificate::from_der(&body) {
                Ok(c) => vec![c],
                Err(_) => cms::certs_from_degenerate(&body).map_err(protocol)?,
            },
        };
        if certs.is_empty() {
            return Err(protocol("GetCACert returned no certificate"));
        }
        Ok(certs)
    }

    /// The content encryption of requests: AES-128 when the server takes AES (RFC 8894:
    /// `SCEPStandard` implies it), else 3DES; never single DES.
    pub fn cipher(&self) -> Cipher {
        if self.can("AES") || self.can("SCEPStandard") { Cipher::Aes128 } else { Cipher::Des3 }
    }

    /// Sends a pkiMessage; returns the server's answer.
    fn operation(&self, msg: &[u8]) -> Result<Vec<u8>> {
        let post = self.can("POSTPKIOperation") || self.can("SCEPStandard");
        let (ctype, body) = if post {
            // The same signed message again: the CA sees one transaction.
            with_retries("PKIOperation", &self.url, || {
                let resp = self
                    .agent
                    .post(&self.url)
                    .query("operation", "PKIOperation")
                    .header("Content-Type", "application/x-pki-message")
                    .send(msg)
                    .map_err(|e| transport(&self.url, e))?;
                self.read("PKIOperation", resp)
            })?
        } else {
            let b64 = <base64ct::Base64 as base64ct::Encoding>::encode_string(msg);
            self.get("PKIOperation", Some(&b64))?
        };
        if !ctype.starts_with("application/x-pki-message") {
            warn!(
                "the SCEP server answered PKIOperation as {ctype:?}, not application/x-pki-message"
            );
        }
        Ok(body)
    }

    /// Sends one request to the CA (or an RA it issued) and reads the CertRep, which the CA
    /// or one of its RAs must have signed.
    pub fn transact(&self, ca: &ScepCa, req: &Request<'_>) -> Result<Reply> {
        let nonce = cms::random_bytes(16);
        let env = cms::envelope(req.inner, ca.recipient(), self.cipher()).map_err(protocol)?;
        let msg = cms::signed_pki_message(
            &env,
            req.signer_cert,
            req.signer_key,
            req.message_type,
            req.transaction_id,
            &nonce,
        )
        .map_err(protocol)?;
        let rep =
            cms::parse_pki_message(&self.operation(&msg)?, &ca.signers()).map_err(protocol)?;
        if rep.message_type != "3" {
            return Err(protocol(format!(
                "expected a CertRep (3), got messageType {}",
                rep.message_type
            )));
        }
        if rep.transaction_id != req.transaction_id {
            return Err(protocol("the CertRep is for another transaction"));
        }
        if rep.recipient_nonce.as_deref() != Some(&nonce[..]) {
            return Err(protocol("the CertRep does not echo this request's nonce (a replay?)"));
        }
        match rep.pki_status.as_deref() {
            Some("0") => {
                let (inner, _) = cms::open_envelope(&rep.econtent, req.signer_cert, req.signer_key)
                    .map_err(protocol)?;
                let certs = cms::certs_from_degenerate(&inner).map_err(protocol)?;
                let spki = cms::spki_of(&req.signer_key.to_public_key()).map_err(protocol)?;
                Ok(Reply::Issued(Box::new(issued_for(certs, ca, &spki, req)?)))
            }
            Some("2") => Ok(Reply::Failed(rep.fail_info.unwrap_or_else(|| "?".into()))),
            Some("3") => Ok(Reply::Pending),
            other => Err(protocol(format!("unknown pkiStatus {other:?}"))),
        }
    }
}

/// The certificate of the CertRep for the requested key, checked ([`ca::check_issued`]):
/// the CA's, valid now, for client authentication, the requested subject and key.
fn issued_for(
    certs: Vec<Certificate>,
    ca: &ScepCa,
    signer_spki: &spki::SubjectPublicKeyInfoOwned,
    req: &Request<'_>,
) -> Result<Certificate> {
    // The requested key and subject: the CSR's (a PKCSReq or RenewalReq), else the signer's.
    let (wanted, subject) = match x509_cert::request::CertReq::from_der(req.inner) {
        Ok(csr) => (csr.info.public_key, csr.info.subject),
        Err(_) => (signer_spki.clone(), req.signer_cert.tbs_certificate.subject.clone()),
    };
    let issued = certs
        .into_iter()
        .find(|c| c.tbs_certificate.subject_public_key_info == wanted)
        .ok_or_else(|| protocol("the CertRep holds no certificate for this device's key"))?;
    ca::check_issued(&issued, &ca.ca, &subject, &wanted, std::time::SystemTime::now())
        .map_err(protocol)?;
    Ok(issued)
}

fn transport(url: &str, e: ureq::Error) -> Error {
    let timeout = matches!(e, ureq::Error::Timeout(_));
    Error::Network { url: url.to_string(), reason: e.to_string(), timeout }
}

/// Asks for a certificate and waits for it while the CA keeps it PENDING: `GetCertInitial`
/// every `first_wait`, doubling up to five minutes, until `deadline`.
pub fn request_certificate(
    server: &Server,
    ca: &ScepCa,
    req: &Request<'_>,
    subject: &Name,
    deadline: Duration,
    first_wait: Duration,
) -> Result<Certificate> {
    let started = Instant::now();
    let mut reply = server.transact(ca, req)?;
    let mut wait = first_wait;
    loop {
        match reply {
            Reply::Issued(c) => return Ok(*c),
            Reply::Failed(info) => {
                return Err(Error::Enrollment {
                    code: StatusCode::DM_E_ENROLL_REFUSED,
                    reason: format!(
                        "the certification authority refused the request: failInfo {info} ({})",
                        cms::fail_info_name(&info)
                    ),
                });
            }
            Reply::Pending if started.elapsed() + wait > deadline => {
                return Err(Error::Enrollment {
                    code: StatusCode::DM_E_ENROLL_PENDING,
                    reason: format!(
                        "the request is still pending after {} s (ScepPendingTimeout)",
                        started.elapsed().as_secs()
                    ),
                });
            }
            Reply::Pending => {
                info!("the request is pending at the CA; asking again in {} s", wait.as_secs());
                std::thread::sleep(wait);
                wait = (wait * 2).min(Duration::from_secs(300));
                let issuer = ca.ca.tbs_certificate.subject.clone();
                let poll = cms::IssuerAndSubject { issuer, subject: subject.clone() }
                    .to_der()
                    .map_err(|e| protocol(e.to_string()))?;
                let again = Request { inner: &poll, message_type: "20", ..*req };
                reply = server.transact(ca, &again)?;
            }
        }
    }
}
