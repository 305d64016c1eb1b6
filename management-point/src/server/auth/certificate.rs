//! Client certificates: checked against the device CAs of the request's tenant without the
//! database, and pinned to a device that has a target token only when presented together with
//! that token (see the parent module).

use rustls_pki_types::CertificateDer;

use super::super::tls::{self, ClientCertProblem};
use super::{lookup, register};
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

#[cfg(test)]
mod tests {
    use axum::http::{HeaderMap, StatusCode};

    use super::super::tests::{new_ca, status, with_cert};
    use super::super::{ConnInfo, authenticate as auth_request};
    use super::*;
    use crate::model::{AdvertisementKind, PackageKind};
    use crate::server::fixture::Fixture;

    #[test]
    fn a_second_device_ca_is_trusted_once_its_file_holds_both() {
        let f = Fixture::new(|_| {});
        let conn = |chain: Vec<CertificateDer<'static>>| ConnInfo {
            peer: "127.0.0.1:1".parse().unwrap(),
            client_chain: Some(chain.into()),
        };
        let now = std::time::SystemTime::now() - std::time::Duration::from_secs(60);
        let new_ca = dm_shared::devpki::root_ca(&crate::server::fixture::spec(
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

    /// The attack: a certificate for CN=X from one tenant's CA authenticated as X in every
    /// tenant the server serves.
    #[test]
    fn a_certificate_authenticates_only_in_the_tenant_of_its_ca() {
        let acme_ca = new_ca("acme device CA");
        let pem = acme_ca.cert_pem.clone();
        let f = Fixture::new(move |c| {
            c.devices.tenants = vec!["DEFAULT".into(), "acme".into(), "other".into()];
            c.tenant_client_ca.insert("acme".into(), "acme-ca.pem".into());
            std::fs::write(c.resolve(std::path::Path::new("acme-ca.pem")), pem).unwrap();
        });
        let ours = with_cert("127.0.0.1:1", vec![f.client_cert("dev-1", None, 365)]);
        let acme = with_cert("127.0.0.1:1", vec![f.client_cert("dev-1", Some(&acme_ca), 365)]);
        let h = HeaderMap::new();
        let auth =
            |conn: &ConnInfo, tenant: &str| auth_request(&f.state, &h, conn, tenant, "dev-1");
        assert_eq!(auth(&ours, "DEFAULT").unwrap().tenant, "DEFAULT");
        assert_eq!(auth(&acme, "acme").unwrap().tenant, "acme");
        let crossed = auth(&ours, "acme").unwrap_err();
        assert_eq!(crossed.status, StatusCode::FORBIDDEN);
        assert!(crossed.message.contains("tenant acme"), "{}", crossed.message);
        assert_eq!(status(auth(&acme, "DEFAULT")), StatusCode::FORBIDDEN);
        assert_eq!(
            status(auth(&ours, "other")),
            StatusCode::UNAUTHORIZED,
            "no CA: no certificates"
        );
        let devices = f.state.store.devices().unwrap();
        assert_eq!(devices.len(), 2, "one dev-1 per tenant, each by its own CA: {devices:?}");
    }

    #[test]
    fn one_ca_in_two_tenants_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let ca = new_ca("shared CA");
        std::fs::write(dir.path().join("a.pem"), &ca.cert_pem).unwrap();
        std::fs::write(dir.path().join("b.pem"), &ca.cert_pem).unwrap();
        let mut cfg = crate::config::Config::new(
            dir.path(),
            "127.0.0.1:0".parse().unwrap(),
            "s.pem".into(),
            "s.key".into(),
        );
        cfg.devices.tenants = vec!["DEFAULT".into(), "acme".into()];
        cfg.server.client_ca = Some("a.pem".into());
        cfg.tenant_client_ca.insert("acme".into(), "b.pem".into());
        let err = crate::server::trust::ClientTrust::load(&cfg).unwrap_err().to_string();
        assert!(err.contains("both tenants DEFAULT and acme"), "{err}");
    }

    /// The attack: a certificate for CN=X (anyone with the SCEP challenge can have one)
    /// replaced the identity of device X, registered with its own target token.
    #[test]
    fn a_certificate_never_replaces_a_token_devices_identity_unless_pinned() {
        let f = Fixture::new(|_| {});
        let d = f.device("dev-1", "tok-1");
        let cert = f.client_cert("dev-1", None, 365);
        let alone = with_cert("127.0.0.1:1", vec![cert.clone()]);
        let r = f.try_auth(&HeaderMap::new(), &alone, "dev-1").unwrap_err();
        assert_eq!(r.status, StatusCode::FORBIDDEN);
        assert!(r.message.contains("not pinned") && r.message.contains("use-certificate"), "{r:?}");
        let stored = f.state.store.device("DEFAULT", "dev-1").unwrap().unwrap();
        assert_eq!((stored.cert_sha256, stored.token_sha256.is_some()), (None, true));

        // The device itself presents its token and its certificate together: pinned.
        let tok = Fixture::auth("TargetToken tok-1");
        assert_eq!(f.try_auth(&tok, &alone, "dev-1").unwrap().id, d.id);
        assert_eq!(f.try_auth(&HeaderMap::new(), &alone, "dev-1").unwrap().id, d.id);
        assert_eq!(f.device("dev-1", "tok-1").id, d.id, "the token still works");
        // A wrong token with the certificate pins nothing; another certificate (a renewal)
        // alone is refused, and pinned the same way.
        let renewed = with_cert("127.0.0.1:1", vec![f.client_cert("dev-1", None, 400)]);
        let wrong = f.try_auth(&Fixture::auth("TargetToken nope"), &renewed, "dev-1");
        assert_eq!(status(wrong), StatusCode::UNAUTHORIZED);
        assert_eq!(status(f.try_auth(&HeaderMap::new(), &renewed, "dev-1")), StatusCode::FORBIDDEN);
        f.try_auth(&tok, &renewed, "dev-1").unwrap();
        f.try_auth(&HeaderMap::new(), &renewed, "dev-1").unwrap();
        assert_eq!(status(f.try_auth(&HeaderMap::new(), &alone, "dev-1")), StatusCode::FORBIDDEN);

        // Or an administrator moves the device to certificates: its token goes, and any
        // certificate of its tenant's CA for it (renewals included) authenticates it.
        let cfg = &f.state.config;
        crate::admin::devices::device_use_certificate(cfg, f.state.store.as_ref(), "dev-1")
            .unwrap();
        f.reload();
        assert_eq!(f.try_auth(&HeaderMap::new(), &alone, "dev-1").unwrap().id, d.id);
        let r = f.try_auth(&tok, &Fixture::conn(), "dev-1");
        assert_eq!(status(r), StatusCode::UNAUTHORIZED, "the token no longer works");
    }

    /// The attack: in register mode, anyone holding a certificate from the device CA (such as
    /// anyone with the SCEP challenge) registered a device that received client deployments,
    /// whose settings hold the fleet's secrets.
    #[test]
    fn a_device_registered_by_certificate_is_not_verified_unless_configured() {
        use crate::server::poll::poll;
        for trusted in [false, true] {
            let f = Fixture::new(|c| c.devices.trust_certificate_registrations = trusted);
            f.advertise_package(
                "dm-client",
                AdvertisementKind::Mandatory,
                PackageKind::ClientDeployment,
            );
            let conn = with_cert("127.0.0.1:1", vec![f.client_cert("cert-dev-1", None, 365)]);
            let d = f.try_auth(&HeaderMap::new(), &conn, "cert-dev-1").unwrap();
            assert_eq!(d.registered_by, "certificate");
            assert_eq!(d.is_verified(trusted), trusted);
            let offered = poll(&f.state, &d).unwrap().links.contains_key("deploymentBase");
            assert_eq!(offered, trusted, "trust_certificate_registrations = {trusted}");
        }
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
