//! TLS for the management point (rustls, ring): the server's identity, and client
//! certificates for certificate authentication.
//!
//! A client certificate is asked for, never required, and taken at the TLS layer whenever one
//! is offered (the handshake still proves the client holds its key). It is checked in the
//! request: a device's against the configured client CA, so that a foreign or expired
//! certificate gets an HTTP 403 with a log line instead of a handshake failure the device
//! cannot explain; an administrator's against the certificates pinned for the console.

use std::path::Path;
use std::sync::Arc;

use rustls::DigitallySignedStruct;
use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::CryptoProvider;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, UnixTime};

use crate::error::{Error, Result};

/// Accepts any client certificate whose key the client proves it holds.
#[derive(Debug)]
struct AnyClientCert {
    provider: Arc<CryptoProvider>,
}

impl ClientCertVerifier for AnyClientCert {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[rustls::DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> std::result::Result<ClientCertVerified, rustls::Error> {
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}

fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>> {
    let bytes = dm_shared::fs::read_capped(path, 1024 * 1024)?;
    let certs: Vec<_> = CertificateDer::pem_slice_iter(&bytes)
        .collect::<std::result::Result<_, _>>()
        .map_err(|e| Error::tls(path.display().to_string(), e))?;
    if certs.is_empty() {
        return Err(Error::tls(path.display().to_string(), "no CERTIFICATE block in the PEM file"));
    }
    Ok(certs)
}

/// The roots for client certificates.
pub fn load_client_roots(path: &Path) -> Result<Vec<CertificateDer<'static>>> {
    load_certs(path)
}

/// The server's TLS configuration.
pub fn server_config(cert: &Path, key: &Path) -> Result<rustls::ServerConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let chain = load_certs(cert)?;
    let key_bytes = dm_shared::fs::read_capped(key, 64 * 1024)?;
    let key = PrivateKeyDer::from_pem_slice(&key_bytes)
        .map_err(|e| Error::tls(key.display().to_string(), e))?;
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::tls("protocol versions", e))?;
    let mut cfg = builder
        .with_client_cert_verifier(Arc::new(AnyClientCert { provider }))
        .with_single_cert(chain, key)
        .map_err(|e| Error::tls(cert.display().to_string(), e))?;
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(cfg)
}

/// Why a client certificate is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientCertProblem {
    /// Not issued by the configured CA.
    Foreign,
    /// Expired or not yet valid.
    Expired,
    /// On its CA's revocation list.
    Revoked,
    /// Not for client authentication, or malformed.
    Invalid(String),
}

/// Checks a client certificate chain against `roots` at `now` and returns its subject common
/// name (the device's controller id).
pub fn check_client_cert(
    chain: &[CertificateDer<'static>],
    roots: &[CertificateDer<'static>],
    crls: &[Vec<u8>],
    now: UnixTime,
) -> std::result::Result<String, ClientCertProblem> {
    let Some(leaf) = chain.first() else {
        return Err(ClientCertProblem::Invalid("no certificate".into()));
    };
    let ee = webpki::EndEntityCert::try_from(leaf)
        .map_err(|e| ClientCertProblem::Invalid(format!("{e:?}")))?;
    let anchors: Vec<_> =
        roots.iter().filter_map(|r| webpki::anchor_from_trusted_cert(r).ok()).collect();
    let lists: Vec<webpki::CertRevocationList<'_>> = crls
        .iter()
        .filter_map(|c| webpki::BorrowedCertRevocationList::from_der(c).ok().map(Into::into))
        .collect();
    let refs: Vec<&webpki::CertRevocationList<'_>> = lists.iter().collect();
    // A CA without a list is not checked; a stale list still revokes.
    let revocation = webpki::RevocationOptionsBuilder::new(&refs).ok().map(|b| {
        b.with_depth(webpki::RevocationCheckDepth::Chain)
            .with_status_policy(webpki::UnknownStatusPolicy::Allow)
            .with_expiration_policy(webpki::ExpirationPolicy::Ignore)
            .build()
    });
    ee.verify_for_usage(
        webpki::ALL_VERIFICATION_ALGS,
        &anchors,
        &chain[1..],
        now,
        webpki::KeyUsage::client_auth(),
        revocation,
        None,
    )
    .map_err(|e| match e {
        webpki::Error::CertExpired { .. } | webpki::Error::CertNotValidYet { .. } => {
            ClientCertProblem::Expired
        }
        webpki::Error::CertRevoked => ClientCertProblem::Revoked,
        // A different CA with the same name as ours fails on the signature.
        webpki::Error::UnknownIssuer | webpki::Error::InvalidSignatureForPublicKey => {
            ClientCertProblem::Foreign
        }
        other => ClientCertProblem::Invalid(format!("{other:?}")),
    })?;
    common_name(leaf)
}

/// The subject's one common name, read from the parsed name (never by splitting its text: an
/// `OU` holding `, CN=victim` must not name a device). A subject with no CN or several is
/// refused.
fn common_name(der: &CertificateDer<'_>) -> std::result::Result<String, ClientCertProblem> {
    let bad = |why: &str| ClientCertProblem::Invalid(why.to_string());
    let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref())
        .map_err(|e| ClientCertProblem::Invalid(format!("not a certificate: {e}")))?;
    let mut names = cert.subject().iter_common_name();
    let cn = names.next().ok_or_else(|| bad("no subject common name"))?;
    if names.next().is_some() {
        return Err(bad("more than one subject common name"));
    }
    cn.as_str().map(str::to_string).map_err(|_| bad("the subject common name is not a string"))
}
