//! The authentication table: target tokens, gateway tokens, registration and its caps, the
//! throttle on failed token authentications, and client certificates (their CAs, pins and
//! revocation).

use std::sync::atomic::Ordering;

use axum::http::{HeaderMap, StatusCode};
use rustls_pki_types::CertificateDer;

use super::authenticate as auth_request;
use super::*;
use crate::model::{AdvertisementKind, PackageKind};
use crate::server::conn_info::ConnInfo;
use crate::server::fixture::Fixture;

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
    assert_eq!(d.registered_by, "admin", "an admin-added device is found before the view knows it");
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
    f.advertise_package("dm-client", AdvertisementKind::Mandatory, PackageKind::ClientDeployment);
    let d = f.device("dev-1", "tok");
    assert!(!d.is_verified(false));
    assert!(!poll(&f.state, &d).unwrap().links.contains_key("deploymentBase"));
    f.state.store.set_registered_by(d.id, "approved").unwrap();
    f.reload();
    let d = f.device("dev-1", "tok");
    assert!(poll(&f.state, &d).unwrap().links.contains_key("deploymentBase"));
}

fn with_cert(peer: &str, chain: Vec<CertificateDer<'static>>) -> ConnInfo {
    ConnInfo { peer: peer.parse().unwrap(), client_chain: Some(chain.into()) }
}

fn new_ca(name: &str) -> dm_shared::devpki::Issued {
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
    f.state.store.add_device("DEFAULT", "dev-1", Some(&sha256_hex("right")), "admin", 1).unwrap();
    f.reload();
    let lookups = || f.state.metrics.device_lookups.load(Ordering::Relaxed);
    let at = |ip: &str| ConnInfo { peer: format!("{ip}:1").parse().unwrap(), client_chain: None };
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

// Client certificates.

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
    let auth = |conn: &ConnInfo, tenant: &str| auth_request(&f.state, &h, conn, tenant, "dev-1");
    assert_eq!(auth(&ours, "DEFAULT").unwrap().tenant, "DEFAULT");
    assert_eq!(auth(&acme, "acme").unwrap().tenant, "acme");
    let crossed = auth(&ours, "acme").unwrap_err();
    assert_eq!(crossed.status, StatusCode::FORBIDDEN);
    assert!(crossed.message.contains("tenant acme"), "{}", crossed.message);
    assert_eq!(status(auth(&acme, "DEFAULT")), StatusCode::FORBIDDEN);
    assert_eq!(status(auth(&ours, "other")), StatusCode::UNAUTHORIZED, "no CA: no certificates");
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
    crate::admin::devices::device_use_certificate(cfg, f.state.store.as_ref(), "dev-1").unwrap();
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
