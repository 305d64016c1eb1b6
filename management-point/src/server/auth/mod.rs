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

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::http::{HeaderMap, StatusCode, header};
use rustls_pki_types::CertificateDer;

use super::http::ApiError;
use super::state::AppState;
use crate::config::UnknownDevices;
use crate::model::Device;

mod certificate;

/// What the TLS layer learned about a connection.
#[derive(Debug, Clone)]
pub struct ConnInfo {
    /// The peer address.
    pub peer: SocketAddr,
    /// The client certificate chain, when one was offered.
    pub client_chain: Option<Arc<[CertificateDer<'static>]>>,
}

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
    match credential(state, headers, conn)? {
        Credential::Certificate(chain) => certificate::authenticate(state, chain, tenant, cid),
        Credential::Target(t) => {
            counted(state, conn, || by_target_token(state, conn, t, tenant, cid))
        }
        Credential::Gateway(g) => {
            counted(state, conn, || gateway_token_matches(state, g))?;
            by_gateway_token(state, tenant, cid)
        }
    }
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

/// The device's registration: from the view, else (added a moment ago by an administrator,
/// or unknown) from the database.
fn lookup(state: &AppState, tenant: &str, cid: &str) -> Result<Option<Device>, ApiError> {
    let cached = state.read().devices.get(&(tenant.to_string(), cid.to_string())).cloned();
    if cached.is_some() {
        return Ok(cached);
    }
    state.metrics.device_lookups.fetch_add(1, Ordering::Relaxed);
    state.store.device(tenant, cid).map_err(ApiError::from)
}

/// Registers an unknown device, when the configuration allows it.
fn register(
    state: &AppState,
    tenant: &str,
    cid: &str,
    token: Option<&str>,
    how: &str,
) -> Result<Device, ApiError> {
    if state.config.devices.unknown_devices == UnknownDevices::Refuse {
        return Err(ApiError::unauthorized(format!(
            "device {cid} is not registered and this server does not register unknown devices"
        )));
    }
    state.register(tenant, cid, token, how).map_err(ApiError::from)
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
mod tests {
    use axum::http::StatusCode;

    use super::super::fixture::Fixture;
    use super::*;
    use crate::model::{AdvertisementKind, PackageKind};

    pub(super) fn status(r: Result<Device, ApiError>) -> StatusCode {
        match r {
            Ok(_) => StatusCode::OK,
            Err(e) => e.status,
        }
    }

    #[test]
    fn target_tokens_register_once_and_must_match_after() {
        let f = Fixture::new(|_| {});
        let d = f.device("dev-1", "tok-1");
        assert_eq!((d.controller_id.as_str(), d.registered_by.as_str()), ("dev-1", "target-token"));
        assert_eq!(f.device("dev-1", "tok-1").id, d.id, "the same device again");
        let wrong = f.try_auth(&Fixture::auth("TargetToken tok-2"), &Fixture::conn(), "dev-1");
        assert_eq!(status(wrong), StatusCode::UNAUTHORIZED);
    }

    #[test]
    fn refusals_by_request_shape() {
        let f = Fixture::new(|_| {});
        let conn = Fixture::conn();
        let tok = Fixture::auth("TargetToken t");
        for (headers, tenant, cid, want) in [
            (HeaderMap::new(), "DEFAULT", "dev-1", StatusCode::UNAUTHORIZED),
            (tok.clone(), "OTHER", "dev-1", StatusCode::NOT_FOUND),
            (tok.clone(), "DEFAULT", "bad id", StatusCode::BAD_REQUEST),
            (tok.clone(), "DEFAULT", &"x".repeat(65), StatusCode::BAD_REQUEST),
            (Fixture::auth("TargetToken "), "DEFAULT", "dev-1", StatusCode::UNAUTHORIZED),
            (Fixture::auth("Basic dXNlcg=="), "DEFAULT", "dev-1", StatusCode::UNAUTHORIZED),
            (Fixture::auth("GatewayToken nope"), "DEFAULT", "dev-1", StatusCode::UNAUTHORIZED),
        ] {
            let got = status(authenticate(&f.state, &headers, &conn, tenant, cid));
            assert_eq!(got, want, "{headers:?} {tenant}/{cid}");
        }
        assert!(f.state.store.devices().unwrap().is_empty(), "a refusal registered a device");
    }

    #[test]
    fn gateway_tokens_speak_for_any_device() {
        let f = Fixture::new(|c| c.devices.gateway_token = Some("gateway-secret-0123".into()));
        let h = Fixture::auth("GatewayToken gateway-secret-0123");
        let d = f.try_auth(&h, &Fixture::conn(), "behind-1").unwrap();
        assert_eq!(d.registered_by, "gateway-token");
        let wrong = f.try_auth(
            &Fixture::auth("GatewayToken gateway-secret-0124"),
            &Fixture::conn(),
            "behind-1",
        );
        assert_eq!(status(wrong), StatusCode::UNAUTHORIZED);
    }

    #[test]
    fn unknown_devices_are_refused_when_configured() {
        let f = Fixture::new(Fixture::refusing());
        let r = f.try_auth(&Fixture::auth("TargetToken t"), &Fixture::conn(), "new-1");
        assert_eq!(status(r), StatusCode::UNAUTHORIZED);
        f.state.store.add_device("DEFAULT", "known", Some(&sha256_hex("t")), "admin", 1).unwrap();
        let d = f.try_auth(&Fixture::auth("TargetToken t"), &Fixture::conn(), "known").unwrap();
        assert_eq!(
            d.registered_by, "admin",
            "an admin-added device is found before the view knows it"
        );
    }

    #[test]
    fn registration_is_capped_per_minute_and_in_total() {
        let f = Fixture::new(|c| c.devices.registrations_per_minute = 2);
        f.device("a", "t");
        f.device("b", "t");
        let r = f.try_auth(&Fixture::auth("TargetToken t"), &Fixture::conn(), "c");
        assert_eq!(status(r), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(f.device("a", "t").registered_by, "target-token", "known devices still poll");
        let f = Fixture::new(|c| c.devices.max_devices = 1);
        f.device("a", "t");
        let r = f.try_auth(&Fixture::auth("TargetToken t"), &Fixture::conn(), "b");
        assert_eq!(status(r), StatusCode::FORBIDDEN);
        assert_eq!(f.state.store.devices().unwrap().len(), 1);
    }

    #[test]
    fn a_registration_race_never_lets_a_second_token_in() {
        // Both first polls passed the "unknown" check; the second insert conflicts.
        let f = Fixture::new(|_| {});
        let a = f.state.register("DEFAULT", "new-1", Some(&sha256_hex("a")), "target-token");
        assert!(a.is_ok());
        let b = f.state.register("DEFAULT", "new-1", Some(&sha256_hex("b")), "target-token");
        assert!(matches!(b, Err(crate::Error::Unauthorized(_))), "{b:?}");
        let again = f.state.register("DEFAULT", "new-1", Some(&sha256_hex("a")), "target-token");
        assert_eq!(again.unwrap().id, a.unwrap().id);
    }

    #[test]
    fn self_registered_devices_get_no_client_deployment_until_approved() {
        use super::super::poll::poll;
        let f = Fixture::new(|_| {});
        f.advertise_package(
            "dm-client",
            AdvertisementKind::Mandatory,
            PackageKind::ClientDeployment,
        );
        let d = f.device("dev-1", "tok");
        assert!(!d.is_verified(false));
        assert!(!poll(&f.state, &d).unwrap().links.contains_key("deploymentBase"));
        f.state.store.set_registered_by(d.id, "approved").unwrap();
        f.reload();
        let d = f.device("dev-1", "tok");
        assert!(poll(&f.state, &d).unwrap().links.contains_key("deploymentBase"));
    }

    pub(super) fn with_cert(peer: &str, chain: Vec<CertificateDer<'static>>) -> ConnInfo {
        ConnInfo { peer: peer.parse().unwrap(), client_chain: Some(chain.into()) }
    }

    pub(super) fn new_ca(name: &str) -> dm_shared::devpki::Issued {
        let now = std::time::SystemTime::now() - std::time::Duration::from_secs(60);
        let spec = super::super::fixture::spec(name, dm_shared::devpki::Purpose::Ca, now, 10);
        dm_shared::devpki::root_ca(&spec).unwrap()
    }

    /// The attacks: guessing a device's target token (an administrator may have chosen a weak
    /// one) at full speed, and making the server read its database for unknown devices before
    /// any credential was checked.
    #[test]
    fn failed_token_authentications_are_throttled_per_address_and_cost_no_read_unchecked() {
        let f = Fixture::new(|c| {
            c.devices.unknown_devices = crate::config::UnknownDevices::Refuse;
            c.devices.failed_auth_per_minute = 5;
            c.devices.gateway_token = Some("gateway-secret-0123".into());
        });
        f.state
            .store
            .add_device("DEFAULT", "dev-1", Some(&sha256_hex("right")), "admin", 1)
            .unwrap();
        f.reload();
        let lookups = || f.state.metrics.device_lookups.load(Ordering::Relaxed);
        let at =
            |ip: &str| ConnInfo { peer: format!("{ip}:1").parse().unwrap(), client_chain: None };
        let guesser = at("192.0.2.66");
        // Nothing is read for a request whose credential fails without the database.
        let foreign_ca = new_ca("foreign CA");
        let foreign = with_cert("192.0.2.66:1", vec![f.client_cert("ghost", Some(&foreign_ca), 9)]);
        for (h, conn) in [
            (HeaderMap::new(), &guesser),
            (Fixture::auth("Basic eA=="), &guesser),
            (Fixture::auth("GatewayToken not-configured"), &guesser),
            (HeaderMap::new(), &foreign),
        ] {
            assert!(f.try_auth(&h, conn, "ghost").is_err());
        }
        assert_eq!(lookups(), 0, "read before a credential was checked");

        // Wrong tokens (the gateway token above was one) and unknown devices count; the sixth
        // attempt is not checked at all.
        for i in 0..4 {
            let (h, cid) =
                (Fixture::auth(&format!("TargetToken guess-{i}")), ["dev-1", "ghost"][i % 2]);
            assert_eq!(status(f.try_auth(&h, &guesser, cid)), StatusCode::UNAUTHORIZED);
        }
        let read = lookups();
        assert_eq!(read, 2, "the two unknown ids were looked up");
        let e = f.try_auth(&Fixture::auth("TargetToken right"), &guesser, "dev-1").unwrap_err();
        assert_eq!(e.status, StatusCode::TOO_MANY_REQUESTS);
        assert!((1..=60).contains(&e.retry_after.unwrap()), "{e:?}");
        assert_eq!(
            status(f.try_auth(&Fixture::auth("TargetToken x"), &guesser, "ghost-2")),
            StatusCode::TOO_MANY_REQUESTS
        );
        assert_eq!(lookups(), read, "a held-back address costs no read");
        // A gateway with the right token asking for devices not registered guesses nothing.
        let gateway = at("203.0.113.9");
        for i in 0..10 {
            let h = Fixture::auth("GatewayToken gateway-secret-0123");
            let r = f.try_auth(&h, &gateway, &format!("unregistered-{i}"));
            assert_eq!(status(r), StatusCode::UNAUTHORIZED, "refused, never held back");
        }
        // A device behind another address is not held back, and successes never count.
        for _ in 0..20 {
            f.try_auth(&Fixture::auth("TargetToken right"), &at("198.51.100.7"), "dev-1").unwrap();
        }
        // A certificate cannot be guessed: certificate devices behind the guesser's NAT go on.
        let mine = with_cert("192.0.2.66:1", vec![f.client_cert("cert-dev", None, 365)]);
        f.state.store.add_device("DEFAULT", "cert-dev", None, "admin", 1).unwrap();
        f.reload();
        f.try_auth(&HeaderMap::new(), &mine, "cert-dev").unwrap();
    }
}
