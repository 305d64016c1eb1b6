//! Client certificates: checked against the device CAs of the request's tenant without the
//! database, and pinned to a device that has a target token only when presented together with
//! that token (see the parent module).

use rustls_pki_types::CertificateDer;

use super::super::tls::{self, ClientCertProblem};
use super::registration::{lookup, register};
use crate::model::Device;
use crate::server::http::ApiError;
use crate::server::state::AppState;

/// A client certificate alone: it must be valid for the device in its tenant, and, for a
/// device with a target token, be the one pinned to it.
pub(super) fn authenticate(
    state: &AppState,
    chain: &[CertificateDer<'static>],
    tenant: &str,
    cid: &str,
) -> Result<Device, ApiError> {
    let sha = check(state, chain, tenant, cid)?;
    let d = match lookup(state, tenant, cid)? {
        Some(d) => d,
        None => {
            let d = register(state, tenant, cid, None, Device::CERTIFICATE_REGISTERED)?;
            return remember(state, d, &sha);
        }
    };
    if d.token_sha256.is_some() && d.cert_sha256.as_deref() != Some(sha.as_str()) {
        return Err(ApiError::forbidden(format!(
            "device {cid} authenticates with its target token, and this certificate (sha256 {}…) is not pinned to it: present it once together with the token, or run dmmp device use-certificate {tenant}/{cid}",
            &sha[..16]
        )));
    }
    remember(state, d, &sha)
}

/// Checks a client certificate for `tenant`/`cid` without the database: it chains to a device
/// CA of the tenant with the clientAuth usage, is valid now and on no revocation list, names
/// the device, and was not revoked by an administrator. Returns its SHA-256.
fn check(
    state: &AppState,
    chain: &[CertificateDer<'static>],
    tenant: &str,
    cid: &str,
) -> Result<String, ApiError> {
    let now = rustls_pki_types::UnixTime::since_unix_epoch(std::time::Duration::from_secs(
        state.now().max(0) as u64,
    ));
    let checked = {
        let trust = state.client_trust.read().unwrap_or_else(|p| p.into_inner());
        let roots = trust.roots_of(tenant);
        if roots.is_empty() {
            return Err(ApiError::unauthorized(if trust.any() {
                format!("tenant {tenant} takes no client certificates: it has no device CA")
            } else {
                "client certificates are not accepted by this server".into()
            }));
        }
        tls::check_client_cert(chain, roots, &trust.lists, now)
    };
    let cn = checked.map_err(|p| match p {
        ClientCertProblem::Foreign => ApiError::forbidden(format!(
            "the client certificate was not issued by this server's client CA for tenant {tenant}"
        )),
        ClientCertProblem::Expired => {
            ApiError::forbidden("the client certificate is expired or not yet valid")
        }
        ClientCertProblem::Revoked => {
            ApiError::forbidden("the client certificate is revoked by its CA's revocation list")
        }
        ClientCertProblem::Invalid(why) => ApiError::forbidden(format!(
            "the client certificate is not valid for client authentication: {why}"
        )),
    })?;
    if cn != cid {
        return Err(ApiError::forbidden(format!(
            "the client certificate is for {cn:?}, not {cid:?}"
        )));
    }
    let Some(leaf) = chain.first() else {
        return Err(ApiError::forbidden("the client certificate chain is empty"));
    };
    let sha = dm_shared::pki::sha256_hex(leaf.as_ref());
    if state.read().revoked_certs.contains(&sha) {
        return Err(ApiError::forbidden(format!(
            "the client certificate of {cid} was revoked by an administrator (dmmp device revoke)"
        )));
    }
    Ok(sha)
}

/// Records the certificate a device authenticated with, when it changed (an enrollment, a
/// renewal, a pin), so that an administrator can revoke it.
fn remember(state: &AppState, mut d: Device, sha: &str) -> Result<Device, ApiError> {
    if d.cert_sha256.as_deref() == Some(sha) {
        return Ok(d);
    }
    state.store.set_device_cert(d.id, sha).map_err(ApiError::from)?;
    d.cert_sha256 = Some(sha.to_string());
    if let Some(v) = state.write().devices.get_mut(&(d.tenant.clone(), d.controller_id.clone())) {
        v.cert_sha256 = d.cert_sha256.clone();
    }
    log::info!("device {} authenticates with certificate {}", d.controller_id, &sha[..16]);
    Ok(d)
}

/// A certificate presented with the device's right target token: pinned to the device when
/// it is valid for it (a first pin, or a renewal), else ignored with a log line (the token
/// authenticated the request).
pub(super) fn pin_with_token(
    state: &AppState,
    d: Device,
    chain: &[CertificateDer<'static>],
    tenant: &str,
    cid: &str,
) -> Result<Device, ApiError> {
    match check(state, chain, tenant, cid) {
        Ok(sha) if d.cert_sha256.as_deref() != Some(sha.as_str()) => {
            log::info!(
                "device {tenant}/{cid} presented its target token and a certificate: the certificate (sha256 {}…) is pinned to it",
                &sha[..16]
            );
            remember(state, d, &sha)
        }
        Ok(_) => Ok(d),
        Err(e) => {
            log::info!(
                "device {tenant}/{cid} presented its target token and a certificate that is not pinned: {}",
                e.message
            );
            Ok(d)
        }
    }
}
