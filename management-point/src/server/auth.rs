//! Who is asking: a device's credentials (target token, gateway token or client certificate)
//! checked against its registration, and the registration of devices the server has not seen
//! when the configuration allows it.

use std::net::SocketAddr;

use axum::http::{HeaderMap, header};
use rustls_pki_types::CertificateDer;

use super::http::ApiError;
use super::state::AppState;
use super::tls::{self, ClientCertProblem};
use crate::config::UnknownDevices;
use crate::model::Device;

/// What the TLS layer learned about a connection.
#[derive(Debug, Clone)]
pub struct ConnInfo {
    /// The peer address.
    pub peer: SocketAddr,
    /// The client certificate chain, when one was offered.
    pub client_chain: Option<Vec<CertificateDer<'static>>>,
}

fn sha256_hex(s: &str) -> String {
    dm_shared::pki::sha256_hex(s.as_bytes())
}

fn valid_id(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

/// Authenticates a request for `tenant`/`controller_id`, registering unknown devices when the
/// configuration allows it.
pub fn authenticate(
    state: &AppState,
    headers: &HeaderMap,
    conn: &ConnInfo,
    tenant: &str,
    cid: &str,
) -> Result<Device, ApiError> {
    let cfg = &state.config.devices;
    if !cfg.tenants.iter().any(|t| t == tenant) {
        return Err(ApiError::not_found(format!("tenant {tenant:?} is not served here")));
    }
    if !valid_id(cid) {
        return Err(ApiError::bad_request(
            "the controller id must be 1 to 64 letters, digits, '.', '_' or '-'",
        ));
    }
    let cached = state.read().devices.get(&(tenant.to_string(), cid.to_string())).cloned();
    // A device an administrator added a moment ago may not be in the view yet: ask the
    // database before treating it as unknown (rare, so not a per-poll cost).
    let existing = match cached {
        Some(d) => Some(d),
        None => state.store.device(tenant, cid).map_err(ApiError::from)?,
    };
    let register = |token: Option<&str>, how: &str| -> Result<Device, ApiError> {
        if cfg.unknown_devices == UnknownDevices::Refuse {
            return Err(ApiError::unauthorized(format!(
                "device {cid} is not registered and this server does not register unknown devices"
            )));
        }
        state.register(tenant, cid, token, how).map_err(ApiError::from)
    };
    let auth = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).map(str::trim);
    if let Some(auth) = auth {
        let (scheme, secret) =
            auth.split_once(' ').map(|(a, b)| (a, b.trim())).unwrap_or((auth, ""));
        return match scheme {
            "TargetToken" if cfg.target_token && !secret.is_empty() => {
                let presented = sha256_hex(secret);
                match existing {
                    Some(d) if d.token_sha256.as_deref() == Some(presented.as_str()) => Ok(d),
                    Some(_) => Err(ApiError::unauthorized(format!(
                        "the target token of device {cid} does not match"
                    ))),
                    None => register(Some(&presented), "target-token"),
                }
            }
            "GatewayToken" if !secret.is_empty() => match &cfg.gateway_token {
                Some(g) if sha256_hex(g) == sha256_hex(secret) => match existing {
                    Some(d) => Ok(d),
                    None => register(None, "gateway-token"),
                },
                _ => Err(ApiError::unauthorized("the gateway token does not match")),
            },
            _ => Err(ApiError::unauthorized(format!(
                "authorization scheme {scheme:?} is not accepted; use TargetToken, GatewayToken or a client certificate"
            ))),
        };
    }
    if let Some(chain) = &conn.client_chain {
        if state.client_roots.is_empty() {
            return Err(ApiError::unauthorized(
                "client certificates are not accepted by this server",
            ));
        }
        let now = rustls_pki_types::UnixTime::since_unix_epoch(std::time::Duration::from_secs(
            state.now().max(0) as u64,
        ));
        let cn = tls::check_client_cert(chain, &state.client_roots, now).map_err(|p| match p {
            ClientCertProblem::Foreign => ApiError::forbidden(
                "the client certificate was not issued by this server's client CA",
            ),
            ClientCertProblem::Expired => {
                ApiError::forbidden("the client certificate is expired or not yet valid")
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
        return match existing {
            Some(d) => Ok(d),
            None => register(None, "certificate"),
        };
    }
    Err(ApiError::unauthorized(
        "no credentials: send Authorization: TargetToken <token> or a client certificate",
    ))
}
