//! Who is asking: a device's credentials (target token, gateway token or client certificate)
//! checked against its registration, and the registration of devices the server has not seen
//! when the configuration allows it.
//!
//! Everything that can be checked without the database is checked first: the request's shape,
//! the gateway token, a certificate's chain, tenant and name. Only then is a device the view
//! does not hold looked up. Failed token authentications (a wrong token, an unknown device)
//! count against the client's address ([`super::throttle`]); past
//! `[devices] failed_auth_per_minute` its token requests are answered 429 until the minute
//! ends, unchecked. Certificate requests are never held back: a certificate cannot be guessed.
//!
//! A certificate authenticates only in the tenant whose device CA issued it, and never
//! replaces the identity of a device that has a target token unless it was pinned to that
//! device: presented together with the device's token (the pin follows a renewal done the
//! same way), or after `dmmp device use-certificate` removed the token.

use axum::http::{HeaderMap, StatusCode, header};
use rustls_pki_types::CertificateDer;

use super::conn_info::ConnInfo;
use super::http::ApiError;
use super::state::{AppState, View};
use crate::model::Device;

mod certificate;
mod registration;

use self::registration::{lookup, register};

/// The credential a request authenticates with.
enum Credential<'a> {
    /// `Authorization: TargetToken <secret>`.
    Target(&'a str),
    /// `Authorization: GatewayToken <secret>`.
    Gateway(&'a str),
    /// A TLS client certificate chain, with no `Authorization`.
    Certificate(&'a [CertificateDer<'static>]),
}

fn sha256_hex(s: &str) -> String {
    dm_shared::pki::sha256_hex(s.as_bytes())
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
    if !state.config.devices.tenants.iter().any(|t| t == tenant) {
        return Err(ApiError::not_found(format!("tenant {tenant:?} is not served here")));
    }
    if !Device::valid_controller_id(cid) {
        return Err(ApiError::bad_request(
            "the controller id must be 1 to 64 letters, digits, '.', '_' or '-'",
        ));
    }
    let d = match credential(state, headers, conn)? {
        Credential::Certificate(chain) => certificate::authenticate(state, chain, tenant, cid),
        Credential::Target(t) => {
            counted(state, conn, || by_target_token(state, conn, t, tenant, cid))
        }
        Credential::Gateway(g) => {
            counted(state, conn, || gateway_token_matches(state, g))?;
            by_gateway_token(state, tenant, cid)
        }
    }?;
    // Its address is its boundary: the distribution points its links name.
    state.dist.note_peer(d.id, conn.peer.ip());
    Ok(d)
}

/// The device a request authenticates as, when [`authenticate`] would find it in the view and
/// change nothing: a `TargetToken` that matches a device the view holds, on a connection with
/// no client certificate, from an address that is not held back. `None` is no refusal: every
/// other request is [`authenticate`]'s to decide (and this one would be decided the same way).
/// It reads no database and takes no lock but the throttle's, so a poll can be answered on
/// the connection's own task.
pub fn known_by_token<'v>(
    state: &AppState,
    view: &'v View,
    headers: &HeaderMap,
    conn: &ConnInfo,
    tenant: &str,
    cid: &str,
) -> Option<&'v Device> {
    if conn.client_chain.is_some()
        || !state.config.devices.tenants.iter().any(|t| t == tenant)
        || !Device::valid_controller_id(cid)
    {
        return None;
    }
    let Ok(Credential::Target(secret)) = credential(state, headers, conn) else { return None };
    if state.auth_failures.blocked(conn.peer.ip(), state.now()).is_some() {
        return None;
    }
    let d = view.devices.get(&(tenant.to_string(), cid.to_string()))?;
    (d.token_sha256.as_deref() == Some(sha256_hex(secret).as_str())).then_some(d)
}

/// The credential of a request, or why it has none that is accepted.
fn credential<'a>(
    state: &AppState,
    headers: &'a HeaderMap,
    conn: &'a ConnInfo,
) -> Result<Credential<'a>, ApiError> {
    let auth = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).map(str::trim);
    if let Some(auth) = auth {
        let (scheme, secret) =
            auth.split_once(' ').map(|(a, b)| (a, b.trim())).unwrap_or((auth, ""));
        return match scheme {
            "TargetToken" if state.config.devices.target_token && !secret.is_empty() => {
                Ok(Credential::Target(secret))
            }
            "GatewayToken" if !secret.is_empty() => Ok(Credential::Gateway(secret)),
            _ => Err(ApiError::unauthorized(format!(
                "authorization scheme {scheme:?} is not accepted; use TargetToken, GatewayToken or a client certificate"
            ))),
        };
    }
    match &conn.client_chain {
        Some(chain) => Ok(Credential::Certificate(chain)),
        None => Err(ApiError::unauthorized(
            "no credentials: send Authorization: TargetToken <token> or a client certificate",
        )),
    }
}

/// Runs a token check unless the client's address failed too often, counting its failure
/// (401) against the address.
fn counted<T>(
    state: &AppState,
    conn: &ConnInfo,
    check: impl FnOnce() -> Result<T, ApiError>,
) -> Result<T, ApiError> {
    let ip = conn.peer.ip();
    if let Some(wait) = state.auth_failures.blocked(ip, state.now()) {
        return Err(ApiError::throttled(
            format!(
                "too many failed authentications from {ip} (more than {} a minute); try again in {wait} s",
                state.config.devices.failed_auth_per_minute
            ),
            wait,
        ));
    }
    let r = check();
    if r.as_ref().is_err_and(|e| e.status == StatusCode::UNAUTHORIZED) {
        state.auth_failures.fail(ip, state.now());
    }
    r
}

/// `TargetToken`: the device's stored token must match (an unknown device registers with it).
/// A certificate presented with the right token is pinned to the device.
fn by_target_token(
    state: &AppState,
    conn: &ConnInfo,
    secret: &str,
    tenant: &str,
    cid: &str,
) -> Result<Device, ApiError> {
    let presented = sha256_hex(secret);
    let d = match lookup(state, tenant, cid)? {
        Some(d) if d.token_sha256.as_deref() == Some(presented.as_str()) => d,
        Some(_) => {
            return Err(ApiError::unauthorized(format!(
                "the target token of device {cid} does not match"
            )));
        }
        None => register(state, tenant, cid, Some(&presented), Device::SELF_REGISTERED)?,
    };
    match &conn.client_chain {
        Some(chain) => certificate::pin_with_token(state, d, chain, tenant, cid),
        None => Ok(d),
    }
}

/// `GatewayToken`: the configured gateway token speaks for any device.
fn gateway_token_matches(state: &AppState, secret: &str) -> Result<(), ApiError> {
    match &state.config.devices.gateway_token {
        Some(g) if sha256_hex(g) == sha256_hex(secret) => Ok(()),
        _ => Err(ApiError::unauthorized("the gateway token does not match")),
    }
}

/// The device a gateway that presented the gateway token speaks for. (An unknown device it
/// asks for is no guess: it does not count against the gateway's address.)
fn by_gateway_token(state: &AppState, tenant: &str, cid: &str) -> Result<Device, ApiError> {
    match lookup(state, tenant, cid)? {
        Some(d) => Ok(d),
        None => register(state, tenant, cid, None, "gateway-token"),
    }
}

#[cfg(test)]
mod tests;
