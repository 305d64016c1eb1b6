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
    pub client_chain: Option<std::sync::Arc<[CertificateDer<'static>]>>,
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
        if !state.takes_client_certificates() {
            return Err(ApiError::unauthorized(
                "client certificates are not accepted by this server",
            ));
        }
        let now = rustls_pki_types::UnixTime::since_unix_epoch(std::time::Duration::from_secs(
            state.now().max(0) as u64,
        ));
        let checked = {
            let trust = state.client_trust.read().unwrap_or_else(|p| p.into_inner());
            tls::check_client_cert(chain, &trust.roots, &trust.lists, now)
        };
        let cn = checked.map_err(|p| match p {
            ClientCertProblem::Foreign => ApiError::forbidden(
                "the client certificate was not issued by this server's client CA",
            ),
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
        let sha = dm_shared::pki::sha256_hex(chain[0].as_ref());
        if state.read().revoked_certs.contains(&sha) {
            return Err(ApiError::forbidden(format!(
                "the client certificate of {cid} was revoked by an administrator (dmmp device revoke)"
            )));
        }
        let d = match existing {
            Some(d) => d,
            None => register(None, "certificate")?,
        };
        return remember_cert(state, d, &sha);
    }
    Err(ApiError::unauthorized(
        "no credentials: send Authorization: TargetToken <token> or a client certificate",
    ))
}

/// Records the certificate a device authenticated with, when it changed (an enrollment, a
/// renewal), so that an administrator can revoke it.
fn remember_cert(state: &AppState, mut d: Device, sha: &str) -> Result<Device, ApiError> {
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

#[cfg(test)]
mod tests {
    use axum::http::StatusCode;

    use super::super::fixture::Fixture;
    use super::*;
    use crate::model::{AdvertisementKind, PackageKind};

    fn status(r: Result<Device, ApiError>) -> StatusCode {
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
        assert!(!d.is_verified());
        assert!(!poll(&f.state, &d).unwrap().links.contains_key("deploymentBase"));
        f.state.store.set_registered_by(d.id, "approved").unwrap();
        f.reload();
        let d = f.device("dev-1", "tok");
        assert!(poll(&f.state, &d).unwrap().links.contains_key("deploymentBase"));
    }

    #[test]
    fn a_second_device_ca_is_trusted_once_its_file_holds_both() {
        let f = Fixture::new(|_| {});
        let conn = |chain: Vec<CertificateDer<'static>>| ConnInfo {
            peer: "127.0.0.1:1".parse().unwrap(),
            client_chain: Some(chain.into()),
        };
        let now = std::time::SystemTime::now() - std::time::Duration::from_secs(60);
        let new_ca = dm_shared::devpki::root_ca(&super::super::fixture::spec(
            "new CA",
            dm_shared::devpki::Purpose::Ca,
            now,
            10,
        ))
        .unwrap();
        let old = f.client_cert("cert-dev-1", None, 365);
        let new = f.client_cert("cert-dev-1", Some(&new_ca), 365);
        f.state.reload_client_trust();
        let r = f.try_auth(&HeaderMap::new(), &conn(vec![new.clone()]), "cert-dev-1");
        assert_eq!(status(r), StatusCode::FORBIDDEN, "not trusted yet");
        // The administrator appends the new CA: both are trusted, without a restart.
        let ca_file = f.dir.path().join("root-ca.pem");
        let both = format!("{}{}", std::fs::read_to_string(&ca_file).unwrap(), new_ca.cert_pem);
        std::fs::write(&ca_file, &both).unwrap();
        f.state.reload_client_trust();
        f.try_auth(&HeaderMap::new(), &conn(vec![old.clone()]), "cert-dev-1").unwrap();
        f.try_auth(&HeaderMap::new(), &conn(vec![new.clone()]), "cert-dev-1").unwrap();
        // A file that does not parse keeps what was trusted.
        std::fs::write(&ca_file, "not a certificate").unwrap();
        f.state.reload_client_trust();
        f.try_auth(&HeaderMap::new(), &conn(vec![new.clone()]), "cert-dev-1").unwrap();
        // The old CA retired.
        std::fs::write(&ca_file, &new_ca.cert_pem).unwrap();
        f.state.reload_client_trust();
        f.try_auth(&HeaderMap::new(), &conn(vec![new]), "cert-dev-1").unwrap();
        let r = f.try_auth(&HeaderMap::new(), &conn(vec![old]), "cert-dev-1");
        assert_eq!(status(r), StatusCode::FORBIDDEN, "the retired CA");
    }

    #[test]
    fn revoked_client_certificates_are_refused() {
        let f = Fixture::new(|c| c.server.client_crls = vec!["device-ca.crl".into()]);
        let conn = |chain: Vec<CertificateDer<'static>>| ConnInfo {
            peer: "127.0.0.1:1".parse().unwrap(),
            client_chain: Some(chain.into()),
        };
        let mine = f.client_cert("cert-dev-1", None, 365);
        let other = f.client_cert("cert-dev-2", None, 365);
        // No list yet: both authenticate, and the server remembers their certificates.
        f.state.reload_client_trust();
        let d = f.try_auth(&HeaderMap::new(), &conn(vec![mine.clone()]), "cert-dev-1").unwrap();
        assert_eq!(d.cert_sha256.as_deref(), Some(sha256_hex_der(&mine).as_str()));
        f.try_auth(&HeaderMap::new(), &conn(vec![other.clone()]), "cert-dev-2").unwrap();
        // The CA revokes dev-1's certificate: refused once the list is read.
        let serial = dm_shared::pki::Cert::from_der(mine.to_vec(), std::path::Path::new("m"))
            .unwrap()
            .serial()
            .to_vec();
        let now = std::time::SystemTime::now();
        let day = std::time::Duration::from_secs(86_400);
        let pem = dm_shared::devpki::crl(&f.ca, &[&serial], 2, now - day, now + day).unwrap();
        std::fs::write(f.dir.path().join("device-ca.crl"), pem).unwrap();
        f.state.reload_client_trust();
        let r = f.try_auth(&HeaderMap::new(), &conn(vec![mine]), "cert-dev-1");
        assert_eq!(status(r), StatusCode::FORBIDDEN);
        // An administrator revokes dev-2's: refused at the next look at the database.
        f.state.store.revoke_certificate(&sha256_hex_der(&other), 2, "test", 1).unwrap();
        f.reload();
        let r = f.try_auth(&HeaderMap::new(), &conn(vec![other]), "cert-dev-2");
        assert_eq!(status(r), StatusCode::FORBIDDEN);
    }

    fn sha256_hex_der(c: &CertificateDer<'_>) -> String {
        dm_shared::pki::sha256_hex(c.as_ref())
    }

    #[test]
    fn client_certificates_name_their_device() {
        let f = Fixture::new(|_| {});
        let conn = |chain: Vec<CertificateDer<'static>>| ConnInfo {
            peer: "127.0.0.1:1".parse().unwrap(),
            client_chain: Some(chain.into()),
        };
        let mine = f.client_cert("cert-dev-1", None, 365);
        let d = f.try_auth(&HeaderMap::new(), &conn(vec![mine.clone()]), "cert-dev-1").unwrap();
        assert_eq!(d.registered_by, "certificate");
        let other = f.try_auth(&HeaderMap::new(), &conn(vec![mine]), "someone-else");
        assert_eq!(status(other), StatusCode::FORBIDDEN);
        let now = std::time::SystemTime::now();
        let foreign_ca = dm_shared::devpki::root_ca(&dm_shared::devpki::Spec {
            common_name: "fixture CA".into(),
            purpose: dm_shared::devpki::Purpose::Ca,
            not_before: now - std::time::Duration::from_secs(3600),
            not_after: now + std::time::Duration::from_secs(86_400),
        })
        .unwrap();
        let foreign = f.client_cert("cert-dev-1", Some(&foreign_ca), 365);
        let r = f.try_auth(&HeaderMap::new(), &conn(vec![foreign]), "cert-dev-1");
        assert_eq!(status(r), StatusCode::FORBIDDEN, "a foreign CA with the same name");
        // A subject whose OU holds ", CN=victim" names its one real CN, never the victim.
        let spoof = dm_shared::devpki::issue_with_ou(
            &f.ca,
            &dm_shared::devpki::Spec {
                common_name: "attacker".into(),
                purpose: dm_shared::devpki::Purpose::Client,
                not_before: now - std::time::Duration::from_secs(3600),
                not_after: now + std::time::Duration::from_secs(86_400),
            },
            "x, CN=victim",
        )
        .unwrap();
        use rustls_pki_types::pem::PemObject;
        let der = CertificateDer::from_pem_slice(spoof.cert_pem.as_bytes()).unwrap().into_owned();
        let r = f.try_auth(&HeaderMap::new(), &conn(vec![der.clone()]), "victim");
        assert_eq!(status(r), StatusCode::FORBIDDEN, "the OU spoofed a device");
        let d = f.try_auth(&HeaderMap::new(), &conn(vec![der]), "attacker").unwrap();
        assert_eq!(d.controller_id, "attacker");
        let expired = f.client_cert("cert-dev-1", None, 1);
        let r = f.try_auth(&HeaderMap::new(), &conn(vec![expired]), "cert-dev-1");
        assert_eq!(status(r), StatusCode::FORBIDDEN, "an expired certificate");
    }
}
