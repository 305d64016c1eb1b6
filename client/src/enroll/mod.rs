//! Certificate enrollment (`dmcertenroll`): the device's client authentication certificate for
//! native mode, enrolled and renewed with SCEP (RFC 8894) against the `ScepUrl` of its
//! settings. Documented in docs/certificates.md.
//!
//! The RSA key is made on the device and written (0600) into the `my` store the moment it
//! exists; the issued certificate must be for that key and signed by the CA the server
//! presented (pinned by `ScepCaThumbprint` when set); only then is it stored beside the key,
//! both named by the certificate's thumbprint. A renewal signs its request with the current
//! certificate and key (RenewalReq when the server takes it) and keeps the old pair until the
//! new one has worked once (`cert-rotation.json`, which the agent settles). Each run records
//! its outcome in `var/lib/dm/enrollment.json` for the inventory's certificate health. The
//! challenge never reaches a log or a status message.

pub mod ca;
pub mod cms;
pub mod scep;

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use der::{Decode, Encode, EncodePem};
use dm_shared::fs::{self as dmfs, MODE_PRIVATE};
use dm_shared::pki::Cert;
use dm_shared::settings::Settings;
use dm_shared::{Context, StatusCode, StoreName, certstore::CertStore, clock};
use log::{info, warn};
use pkcs8::{DecodePrivateKey, EncodePrivateKey, LineEnding};
use rsa::RsaPrivateKey;
use x509_cert::Certificate;

use self::ca::ScepCa;
use crate::error::{Error, Result};

/// What `dmcertenroll` is asked to do.
#[derive(Debug, Clone, Copy, Default)]
pub struct Options {
    /// Renew the current certificate if it is within `RenewDaysBeforeExpiry` of expiry.
    pub renew: bool,
    /// Enroll or renew whatever the current certificate's state.
    pub force: bool,
}

/// What a run did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// A certificate was enrolled (`renewed`: in place of a current one).
    Enrolled {
        /// Its thumbprint.
        thumbprint: String,
        /// Its subject.
        subject: String,
        /// When it expires (RFC 3339).
        not_after: String,
        /// Whether it replaces a current certificate.
        renewed: bool,
    },
    /// The current certificate is valid and not yet due for renewal.
    Current {
        /// Its thumbprint.
        thumbprint: String,
        /// When it expires (RFC 3339).
        not_after: String,
    },
}

/// The record of the last run, for the inventory's certificate health.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Record {
    /// `enrolled`, `renewed`, `current` or `failed`.
    pub result: String,
    /// The status code (`0x…`).
    pub code: String,
    /// What happened, for people (no secret).
    pub text: String,
    /// When (RFC 3339).
    pub time: String,
}

/// The rotation a renewal leaves for the agent: the new pair is used, and the old one is
/// removed once the new one has worked with the management point.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Rotation {
    /// The new certificate's thumbprint.
    pub new: String,
    /// The old one's.
    pub old: String,
    /// Whether the management point refused the new one (the agent presents the old one
    /// again, and retries the new one later).
    #[serde(default)]
    pub refused: bool,
}

impl Rotation {
    /// The rotation waiting for the agent, if any.
    pub fn load(ctx: &Context) -> Option<Rotation> {
        dmfs::read_json(&rotation_path(ctx), 4096).ok().flatten()
    }

    /// Writes it.
    pub fn save(&self, ctx: &Context) -> Result<()> {
        Ok(dmfs::write_json(&rotation_path(ctx), self, MODE_PRIVATE)?)
    }
}

fn record_path(ctx: &Context) -> PathBuf {
    ctx.layout.state_dir().join("enrollment.json")
}

/// Where a renewal's rotation waits for the agent.
pub fn rotation_path(ctx: &Context) -> PathBuf {
    ctx.layout.state_dir().join("cert-rotation.json")
}

/// The last run's record, if any.
pub fn last_record(ctx: &Context) -> Option<Record> {
    dmfs::read_json(&record_path(ctx), 16 * 1024).ok().flatten()
}

/// Writes the run's record (a failure to write is logged: the run's result stands).
pub fn write_record(ctx: &Context, result: &str, code: StatusCode, text: &str) {
    let r = Record {
        result: result.into(),
        code: code.hex(),
        text: text.chars().take(1000).collect(),
        time: clock::rfc3339(ctx.clock.now()),
    };
    let written = dmfs::create_dir_all(&ctx.layout.state_dir(), dmfs::MODE_DIR_PRIVATE)
        .and_then(|_| dmfs::write_json(&record_path(ctx), &r, MODE_PRIVATE));
    if let Err(e) = written {
        warn!("cannot record the enrollment's outcome: {e}");
    }
}

/// The device's current client certificate and its key: among the `my` store's pairs, the one
/// that expires last.
pub fn current(ctx: &Context) -> Option<(Cert, PathBuf)> {
    let store = CertStore::open(&ctx.layout, StoreName::My);
    store
        .list()
        .ok()?
        .into_iter()
        .filter_map(|c| {
            let key = store.dir().join(format!("{}.key", c.thumbprint()));
            key.is_file().then_some((c, key))
        })
        .max_by_key(|(c, _)| c.not_after_unix())
}

/// Whether `cert` is due for renewal at `now`: within `days` of expiry (or past it).
pub fn renewal_due(cert: &Cert, days: u32, now: SystemTime) -> bool {
    let left = cert.not_after_unix() - clock::unix_secs(now) as i64;
    left <= i64::from(days) * 86_400
}

/// The subject's common name: `CertificateSubject` with `{controller_id}` filled in, or the
/// controller id.
fn subject_cn(settings: &Settings, controller_id: &str) -> String {
    match &settings.certificates.certificate_subject {
        Some(t) => t.replace("{controller_id}", controller_id),
        None => controller_id.to_string(),
    }
}

/// Enrolls, renews, or finds the current certificate good.
pub fn run(ctx: &Context, opts: &Options) -> Result<Outcome> {
    let settings = Settings::load(&ctx.layout.settings_file())?;
    let c = &settings.certificates;
    let url = c.scep_url.clone().ok_or_else(|| {
        Error::BadSettings(
            "[Certificates] ScepUrl is not set: there is no SCEP server to enroll with".into(),
        )
    })?;
    let controller_id = crate::identity::controller_id(ctx, &settings)?;
    dmfs::create_dir_all(&ctx.layout.state_dir(), dmfs::MODE_DIR_PRIVATE)?;
    let lock = ctx.layout.state_dir().join("enroll.lock");
    let _lock = dmfs::try_lock(&lock)?
        .ok_or(Error::AlreadyRunning { what: "dmcertenroll", lock: lock.clone() })?;
    remove_abandoned_keys(ctx);
    let now = ctx.clock.now();
    let current = current(ctx);
    if let Some((cert, _)) = current.as_ref().filter(|(cert, _)| cert.valid_at(now)) {
        let due = renewal_due(cert, c.renew_days_before_expiry, now);
        if !opts.force && (!opts.renew || !due) {
            info!(
                "the device's certificate {} is valid until {}{}; nothing to do",
                cert.describe(),
                clock::rfc3339(cert.not_after()),
                if due { " and due for renewal (dmcertenroll --renew renews it)" } else { "" }
            );
            return Ok(Outcome::Current {
                thumbprint: cert.thumbprint().to_string(),
                not_after: clock::rfc3339(cert.not_after()),
            });
        }
    }
    let server = scep::Server::connect(&url, crate::agent::net::scep_agent(ctx, &settings)?)?;
    let ca = choose_ca(&server.ca_certs()?, c.scep_ca_thumbprint.as_deref(), &url, now)?;
    let renewing = current.as_ref().filter(|(cert, _)| cert.valid_at(now));
    let cn = subject_cn(&settings, &controller_id);
    info!(
        "{} a certificate for CN={cn} from {url} ({}-bit RSA key)",
        if renewing.is_some() { "renewing" } else { "enrolling" },
        c.key_size
    );
    let key = RsaPrivateKey::new(&mut rand_core::OsRng, c.key_size)
        .map_err(|e| protocol(format!("cannot make the key: {e}")))?;
    let key_file = store_new_key(ctx, &key)?;
    let issued = request(&server, &ca, &settings, &cn, &key, renewing);
    let issued = match issued {
        Ok(cert) => cert,
        Err(e) => {
            let _ = dmfs::remove_file(&key_file);
            return Err(e);
        }
    };
    store_issued(ctx, &issued, key_file, renewing.map(|(old, _)| old))
}

/// The CA (the pinned one, or trusted on first use, which the log says) and the RAs it
/// issued, out of `GetCACert`'s certificates; nothing else the server presents is used.
fn choose_ca(
    certs: &[Certificate],
    pin: Option<&str>,
    url: &str,
    now: SystemTime,
) -> Result<ScepCa> {
    let refused = |code, reason: String| Error::Enrollment { code, reason };
    let ca = ScepCa::choose(certs, pin, now).map_err(|r| match r {
        ca::Refusal::NotPinned(why) => {
            refused(StatusCode::CERT_E_UNTRUSTEDROOT, format!("{why}; nothing was sent to it"))
        }
        ca::Refusal::Ambiguous(why) => refused(StatusCode::DM_E_ENROLL_PROTOCOL, why),
    })?;
    let print = cms::cert_fingerprint(&ca.ca).unwrap_or_default();
    if pin.is_none() {
        warn!(
            "ScepCaThumbprint is not set: trusting the CA {url} presents ({}, {print}) on first use",
            cms::subject_string(&ca.ca)
        );
    }
    info!(
        "SCEP CA {} ({print}) with {} RA certificate(s) it issued",
        cms::subject_string(&ca.ca),
        ca.ras.len()
    );
    Ok(ca)
}

/// Removes the keys of enrollments that never finished (a run killed while it waited): their
/// certificates never came. Only one run holds the lock, so none is in use.
fn remove_abandoned_keys(ctx: &Context) {
    let dir = ctx.layout.cert_store_dir(StoreName::My);
    let Ok(entries) = std::fs::read_dir(&dir) else { return };
    for e in entries.flatten() {
        let name = e.file_name();
        let name = name.to_string_lossy();
        if name.starts_with("enrolling-") && name.ends_with(".key") {
            match dmfs::remove_file(&e.path()) {
                Ok(_) => info!("removed {}, left by an enrollment that never finished", name),
                Err(e) => warn!("{e}"),
            }
        }
    }
}

/// Writes the new key into the `my` store (0600 from creation) under a name of its own until
/// its certificate is known.
fn store_new_key(ctx: &Context, key: &RsaPrivateKey) -> Result<PathBuf> {
    let pem = key.to_pkcs8_pem(LineEnding::LF).map_err(|e| protocol(format!("the key: {e}")))?;
    let dir = ctx.layout.cert_store_dir(StoreName::My);
    dmfs::create_dir_all(&dir, dmfs::MODE_DIR_PRIVATE)?;
    let txid = cms::transaction_id(&key.to_public_key()).map_err(protocol)?;
    let path = dir.join(format!("enrolling-{}.key", &txid[..16]));
    dmfs::write_atomic(&path, pem.as_bytes(), MODE_PRIVATE)?;
    Ok(path)
}

fn protocol(reason: impl Into<String>) -> Error {
    Error::Enrollment { code: StatusCode::DM_E_ENROLL_PROTOCOL, reason: reason.into() }
}

/// Builds and sends the request: a RenewalReq signed with the current pair when renewing and
/// the server takes renewals, else a PKCSReq signed with a transient self-signed certificate.
fn request(
    server: &scep::Server,
    ca: &ScepCa,
    settings: &Settings,
    cn: &str,
    key: &RsaPrivateKey,
    renewing: Option<&(Cert, PathBuf)>,
) -> Result<Certificate> {
    let c = &settings.certificates;
    let subject = cms::cn_name(cn).map_err(protocol)?;
    let challenge = c.scep_challenge.as_ref().map(|s| s.expose());
    let csr = cms::build_csr(key, subject.clone(), challenge).map_err(protocol)?;
    let txid = cms::transaction_id(&key.to_public_key()).map_err(protocol)?;
    let transient = cms::self_signed(key, subject.clone()).map_err(protocol)?;
    let current = match renewing.filter(|_| server.can("Renewal")) {
        Some((cert, key_path)) => {
            let old_cert =
                Certificate::from_der(cert.der()).map_err(|e| protocol(e.to_string()))?;
            let issuer = &old_cert.tbs_certificate.issuer;
            if ca::issued_by(&old_cert, &ca.ca) {
                let pem = dmfs::read_capped(key_path, 64 * 1024)?;
                let old_key = RsaPrivateKey::from_pkcs8_pem(&String::from_utf8_lossy(&pem))
                    .map_err(|e| protocol(format!("{}: {e}", key_path.display())))?;
                Some((old_cert, old_key))
            } else {
                info!(
                    "the current certificate was issued by {issuer}, not by this server's CA (a CA rotation): enrolling afresh with the challenge"
                );
                None
            }
        }
        None => None,
    };
    let (signer_cert, signer_key, message_type) = match &current {
        Some((cert, key)) => {
            info!("sending a RenewalReq signed with the current certificate and key");
            (cert, key, "17")
        }
        None => {
            info!("sending a PKCSReq with the challenge password");
            (&transient, key, "19")
        }
    };
    let req =
        scep::Request { inner: &csr, signer_cert, signer_key, message_type, transaction_id: &txid };
    // A CertRep for a RenewalReq is encrypted to the signer: the current pair opens it.
    scep::request_certificate(
        server,
        ca,
        &req,
        &subject,
        c.scep_pending_timeout,
        Duration::from_secs(10),
    )
}

/// Stores the issued certificate beside its key, both named by its thumbprint, and leaves the
/// rotation to the agent when it replaces `old`.
fn store_issued(
    ctx: &Context,
    issued: &Certificate,
    key_file: PathBuf,
    old: Option<&Cert>,
) -> Result<Outcome> {
    let der = issued.to_der().map_err(|e| protocol(e.to_string()))?;
    let cert = Cert::from_der(der, &key_file)?;
    let store = CertStore::open(&ctx.layout, StoreName::My);
    let pem = issued.to_pem(LineEnding::LF).map_err(|e| protocol(e.to_string()))?;
    dmfs::write_atomic(&store.path_for(cert.thumbprint()), pem.as_bytes(), MODE_PRIVATE)?;
    dmfs::rename(&key_file, &store.dir().join(format!("{}.key", cert.thumbprint())))?;
    if let Some(old) = old {
        let r = Rotation {
            new: cert.thumbprint().into(),
            old: old.thumbprint().into(),
            refused: false,
        };
        r.save(ctx)?;
    }
    info!(
        "{} {}, valid until {}, stored in {}",
        if old.is_some() { "renewed:" } else { "enrolled:" },
        cert.describe(),
        clock::rfc3339(cert.not_after()),
        store.dir().display()
    );
    Ok(Outcome::Enrolled {
        thumbprint: cert.thumbprint().to_string(),
        subject: cert.subject().to_string(),
        not_after: clock::rfc3339(cert.not_after()),
        renewed: old.is_some(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_take_the_controller_id() {
        let mut s = Settings::defaults();
        assert_eq!(subject_cn(&s, "dev-1"), "dev-1");
        s.certificates.certificate_subject = Some("device {controller_id}".into());
        assert_eq!(subject_cn(&s, "dev-1"), "device dev-1");
    }

    #[test]
    fn an_enrolled_rsa_pair_proves_itself_to_the_agent() {
        // The agent checks a pair by signing with the key and verifying with the certificate.
        let key = RsaPrivateKey::new(&mut rand_core::OsRng, 2048).unwrap();
        let cert = cms::self_signed(&key, cms::cn_name("dev-1").unwrap()).unwrap();
        let cert = Cert::from_der(cert.to_der().unwrap(), std::path::Path::new("c")).unwrap();
        let pem = key.to_pkcs8_pem(LineEnding::LF).unwrap();
        let p = std::path::Path::new("k");
        let sig = dm_shared::pki::sign(pem.as_bytes(), b"probe", p).unwrap();
        dm_shared::pki::verify_signature(&cert, b"probe", &sig, p).unwrap();
        let other = RsaPrivateKey::new(&mut rand_core::OsRng, 2048).unwrap();
        let pem = other.to_pkcs8_pem(LineEnding::LF).unwrap();
        let sig = dm_shared::pki::sign(pem.as_bytes(), b"probe", p).unwrap();
        assert!(dm_shared::pki::verify_signature(&cert, b"probe", &sig, p).is_err());
    }

    #[test]
    fn renewal_is_due_from_the_first_second_of_the_window() {
        // A certificate valid for exactly N days is due at once with RenewDaysBeforeExpiry=N,
        // even within the second it was issued (X.509 times have whole seconds).
        let key = RsaPrivateKey::new(&mut rand_core::OsRng, 1024).unwrap();
        let cert = cms::self_signed(&key, cms::cn_name("dev-1").unwrap()).unwrap();
        let cert = Cert::from_der(cert.to_der().unwrap(), std::path::Path::new("c")).unwrap();
        let at = |secs: i64| std::time::UNIX_EPOCH + Duration::from_secs(secs as u64);
        let end = cert.not_after_unix();
        assert!(renewal_due(&cert, 30, at(end - 30 * 86_400)));
        assert!(!renewal_due(&cert, 30, at(end - 30 * 86_400 - 1)));
        assert!(renewal_due(&cert, 0, at(end + 1)), "an expired certificate is due");
        assert!(!renewal_due(&cert, 0, at(end - 1)));
    }

    #[test]
    fn pins_refuse_another_ca() {
        let key = RsaPrivateKey::new(&mut rand_core::OsRng, 1024).unwrap();
        let ca = cms::self_signed(&key, cms::cn_name("ca").unwrap()).unwrap();
        let print = cms::cert_fingerprint(&ca).unwrap();
        let now = SystemTime::now();
        assert!(choose_ca(std::slice::from_ref(&ca), Some(&print), "u", now).is_ok());
        assert!(choose_ca(std::slice::from_ref(&ca), None, "u", now).is_ok());
        let err = choose_ca(&[ca], Some(&"0".repeat(64)), "u", now).unwrap_err();
        assert_eq!(err.code(), StatusCode::CERT_E_UNTRUSTEDROOT);
    }
}
