//! The bodies of the fuzz targets of what the client reads from the network (`fuzz/`,
//! `fuzz/README.md`): the DDI answers of a management point and the SCEP messages of a CA,
//! written once for the fuzz targets and the replay of the committed corpora in the fast tier.
//!
//! Each body must return without panicking, whatever the bytes; a panic is a finding. The
//! SCEP bodies read with the fixed RSA key and certificate in `fuzz/fixtures/`, so corpus
//! files made with them reach past the signature and the key transport.
//!
//! Compiled for this crate's tests and with the `fuzzing` feature only.

use std::sync::OnceLock;
use std::time::Duration;

use der::Decode;
use dm_shared::ddi::{
    self, Cancel, ConfirmationBaseAction, ControllerBase, CrlList, Deployment, DeploymentBase,
    ExceptionInfo,
};
use dm_shared::manifest::{self, Manifest, PackageKind};
use dm_shared::pki::Crl;
use dm_shared::programs::SignedProgram;
use dm_shared::vocab::DeviceClass;
use dm_shared::{ClientVersion, Platform};
use rsa::RsaPrivateKey;
use rsa::pkcs8::DecodePrivateKey;
use x509_cert::Certificate;

use crate::agent::plan::{self, Requirements, When};
use crate::agent::{content, image, timing};
use crate::enroll::ca::{self, ScepCa};
use crate::enroll::cms;

/// The fixture's RSA key (PKCS#8 PEM): the SCEP CA's and the device's.
const SCEP_KEY_PEM: &str =
    include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/../fuzz/fixtures/scep-key.pem"));
/// The fixture's self-signed certificate of that key (DER).
const SCEP_CERT_DER: &[u8] =
    include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/../fuzz/fixtures/scep-cert.der"));

/// The SCEP fixture: the key and its certificate.
struct Scep {
    key: RsaPrivateKey,
    cert: Certificate,
}

fn scep() -> &'static Scep {
    static SCEP: OnceLock<Scep> = OnceLock::new();
    SCEP.get_or_init(|| {
        let key = match RsaPrivateKey::from_pkcs8_pem(SCEP_KEY_PEM) {
            Ok(k) => k,
            Err(e) => panic!("the fuzz fixture scep-key.pem does not parse: {e}"),
        };
        let cert = match Certificate::from_der(SCEP_CERT_DER) {
            Ok(c) => c,
            Err(e) => panic!("the fuzz fixture scep-cert.der does not parse: {e}"),
        };
        Scep { key, cert }
    })
}

/// The signed package an advertisement is matched against.
fn signed_manifest() -> &'static Manifest {
    static MANIFEST: OnceLock<Manifest> = OnceLock::new();
    MANIFEST.get_or_init(|| Manifest {
        format: manifest::FORMAT.into(),
        kind: PackageKind::SoftwareDistribution,
        name: "tools".into(),
        version: ClientVersion::new(1, 0, 0, 1),
        platforms: vec![],
        created: "2030-03-17T17:46:40Z".into(),
        files: vec![],
        programs: vec![SignedProgram {
            name: "install".into(),
            command: vec!["setup.sh".into(), "--quiet".into()],
            max_run_time: 600,
            platforms: vec![],
            device_class: DeviceClass::Mobile,
            environment: Default::default(),
            default: false,
            health_check: false,
        }],
        metadata: None,
    })
}

/// A value that was read, written out and read again is the same.
fn round_trip<T>(v: &T)
where
    T: serde::Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug,
{
    let json = match serde_json::to_vec(v) {
        Ok(j) => j,
        Err(e) => panic!("a parsed DDI value cannot be written: {e}"),
    };
    match serde_json::from_slice::<T>(&json) {
        Ok(again) => assert_eq!(&again, v, "a DDI value changed on a round trip"),
        Err(e) => panic!("a parsed DDI value, written out, is refused: {e}"),
    }
}

/// The agent's decisions about a deployment, as `agent::action` and `agent::confirm` take them.
fn deployment(d: &Deployment) {
    assert_eq!(plan::schedule(d, true), When::Now, "a run the user asked for waits");
    let _ = plan::schedule(d, false);
    let Ok((chunk, kind)) = plan::classify(d) else { return };
    let here = Platform::current();
    for class in [DeviceClass::Mobile, DeviceClass::Desktop] {
        let _ = Requirements::of_chunk(chunk).check(&here, class);
    }
    let m = signed_manifest();
    if let Ok(Some(p)) =
        plan::match_advertisement(chunk, kind.unwrap_or(PackageKind::SoftwareDistribution), m)
    {
        let t = plan::max_run_time(chunk, p);
        assert!((1..=p.max_run_time).contains(&t), "run time {t} outside the signed one");
    }
    let dir = std::path::Path::new("/cache/action-1");
    for a in &chunk.artifacts {
        if manifest::check_relative_path(&a.filename).is_ok() {
            let dest = dir.join(&a.filename);
            assert!(dest.starts_with(dir), "artifact {:?} escapes its folder", a.filename);
            assert!(content::partial_of(&dest).starts_with(dir));
        }
    }
}

/// What the agent reads from a management point (hawkBit DDI): the poll's answer, a
/// deployment, a confirmation, a cancellation, the revocation lists and an error body, each
/// read as the agent reads it, then the agent's decisions on it (the poll interval, the
/// deployment's package, requirements, schedule, the advertisement against a signed manifest).
pub fn ddi(data: &[u8]) {
    if let Ok(base) = serde_json::from_slice::<ControllerBase>(data) {
        round_trip(&base);
        let (default, floor) = (Duration::from_secs(3600), Duration::from_secs(60));
        let sleep = timing::poll_sleep(&base.config.polling.sleep, default, floor);
        assert!(sleep >= floor && sleep <= ddi::MAX_SERVER_DELAY, "poll sleep {sleep:?}");
    }
    if let Ok(d) = serde_json::from_slice::<DeploymentBase>(data) {
        round_trip(&d);
        let _ = d.id.parse::<u64>();
        deployment(&d.deployment);
    }
    if let Ok(c) = serde_json::from_slice::<ConfirmationBaseAction>(data) {
        round_trip(&c);
        deployment(&c.confirmation);
    }
    if let Ok(c) = serde_json::from_slice::<Cancel>(data) {
        round_trip(&c);
        let _ = c.cancel_action.stop_id.parse::<u64>();
    }
    if let Ok(list) = serde_json::from_slice::<CrlList>(data) {
        round_trip(&list);
        for pem in list.crls.iter().take(64) {
            let _ = Crl::parse(pem.as_bytes(), std::path::Path::new("dm/crls"));
        }
    }
    if let Ok(e) = serde_json::from_slice::<ExceptionInfo>(data) {
        round_trip(&e);
    }
}

/// A SCEP GetCACert answer: one DER certificate or a certs-only PKCS#7
/// ([`cms::certs_from_degenerate`]), as `enroll::scep` reads it, then the CA chosen among them
/// (without a pin, and pinned to the first), its RAs and the recipient, and each certificate's
/// fingerprint, key and signature by the others.
pub fn scep_ca_certs(data: &[u8]) {
    let certs = match Certificate::from_der(data) {
        Ok(c) => vec![c],
        Err(_) => match cms::certs_from_degenerate(data) {
            Ok(c) => c,
            Err(_) => return,
        },
    };
    if certs.is_empty() {
        return;
    }
    let pin = cms::cert_fingerprint(&certs[0]).ok();
    for pin in [None, pin.as_deref()] {
        let Ok(chosen) = ScepCa::choose(&certs, pin, dm_shared::fuzzing::now()) else { continue };
        assert!(certs.contains(&chosen.ca), "the CA is not one of the certificates");
        for ra in &chosen.ras {
            assert!(
                certs.contains(ra) && ca::issued_by(ra, &chosen.ca),
                "an RA the CA did not issue"
            );
        }
        let r = chosen.recipient();
        assert!(*r == chosen.ca || chosen.ras.contains(r), "the recipient is neither CA nor RA");
    }
    for c in certs.iter().take(8) {
        let _ = (cms::cert_fingerprint(c), cms::subject_string(c), cms::cert_rsa_key(c));
        for issuer in certs.iter().take(8) {
            let _ = cms::verify_cert_signature(c, issuer);
        }
    }
}

/// A SCEP CertRep ([`cms::parse_pki_message`]), checked against the fixture certificate as
/// the CA's; a successful one's content is opened and read as `enroll::scep` does.
pub fn scep_cert_rep(data: &[u8]) {
    let s = scep();
    let Ok(rep) = cms::parse_pki_message(data, std::slice::from_ref(&s.cert)) else { return };
    assert_eq!(rep.signer, s.cert, "a CertRep signed by a certificate it was not given");
    let _ = rep.fail_info.as_deref().map(cms::fail_info_name);
    if let Ok((inner, _)) = cms::open_envelope(&rep.econtent, &s.cert, &s.key) {
        let _ = cms::certs_from_degenerate(&inner);
    }
}

/// A CMS EnvelopedData for the device ([`cms::open_envelope`]) with the fixture key, and the
/// certificates it holds.
pub fn scep_envelope(data: &[u8]) {
    let s = scep();
    if let Ok((inner, _)) = cms::open_envelope(data, &s.cert, &s.key) {
        let _ = cms::certs_from_degenerate(&inner);
    }
}

/// What the agent reads of a system image and of its update engine: the first bytes of an
/// artifact ([`image::sniff`], [`image::swu_version_of`]), a SWUpdate configuration or
/// `sw-description` ([`image::config_value`]), an engine's output ([`image::judge_install`]) and
/// `rauc status` JSON ([`image::booted_slot`], [`image::primary_slot`]).
pub fn system_images(data: &[u8]) {
    use std::os::unix::process::ExitStatusExt;
    let _ = image::sniff(data);
    if let Some(v) = image::swu_version_of(data) {
        assert!(!v.contains('"'), "a version never holds its closing quote");
    }
    let text = String::from_utf8_lossy(data);
    for key in ["version", "public-key-file", "bootloader"] {
        if let Some(v) = image::config_value(&text, key) {
            assert!(!v.contains('"') && !v.contains('\n'));
        }
    }
    let run = crate::agent::tool::ToolRun {
        status: Some(std::process::ExitStatus::from_raw(256)),
        output: text.into_owned(),
        deadline: Duration::from_secs(60),
    };
    match image::judge_install(image::Engine::Rauc, &run) {
        Ok(()) => panic!("an exit status of 1 was judged a success"),
        Err(f) => assert!(f.excerpt.len() <= 12 && f.text.len() < 2000),
    }
    if let Ok(v) = serde_json::from_slice::<serde_json::Value>(data) {
        let _ = (image::booted_slot(&v), image::primary_slot(&v));
    }
}

/// This crate's targets by name, for the replay.
pub const TARGETS: &[dm_shared::fuzzing::Target] = &[
    ("ddi", ddi),
    ("system_images", system_images),
    ("scep_ca_certs", scep_ca_certs),
    ("scep_cert_rep", scep_cert_rep),
    ("scep_envelope", scep_envelope),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fuzz_corpus_replays() {
        let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        assert!(dm_shared::fuzzing::replay(&repo, TARGETS) > 0);
    }
}
