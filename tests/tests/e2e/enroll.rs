//! The device certificate's whole life against a real SCEP server, Debian's `scepserver`
//! (micromdm/scep) with its own CA and challenge: enrollment during setup, a wrong challenge,
//! a server that is down, renewal by the agent, native mode with `dmmp` (a device without a
//! certificate refused, a revoked one refused at once), a CA rotation with no poll failing,
//! and the aarch64 `dmcertenroll` under qemu.
//!
//! `scepserver -port` takes a port only and listens on every address, so each test runs on a
//! thread of its own in a private network namespace that has nothing but loopback: whatever
//! the thread starts (scepserver, dmmp, the installer and the agent it starts) lives there.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::mp::{Mp, https_agent};
use crate::util::*;

/// Runs `body` on a thread of its own in a new network namespace with only loopback, up.
fn in_private_network(body: impl FnOnce() + Send + 'static) {
    let t = std::thread::spawn(move || {
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET)
            .expect("a private network namespace for scepserver (the tests run as root)");
        run_ok(Command::new("ip").args(["link", "set", "lo", "up"]));
        body()
    });
    if let Err(panic) = t.join() {
        std::panic::resume_unwind(panic);
    }
}

/// A running `scepserver` with its own CA.
struct Scep {
    _dir: tempfile::TempDir,
    depot: PathBuf,
    port: u16,
    child: Child,
    log: PathBuf,
}

impl Scep {
    /// A new CA named `org` (its own key) and a server for it requiring `challenge`, issuing
    /// certificates valid `days`, renewals always allowed.
    fn start(org: &str, challenge: &str, days: u32) -> Scep {
        let dir = tempfile::tempdir().unwrap();
        let depot = dir.path().join("depot");
        run_ok(Command::new("scepserver").args(["ca", "-init", "-keySize", "2048"]).args([
            "-organization",
            org,
            "-depot",
            depot.to_str().unwrap(),
        ]));
        // Nothing else listens in this namespace: a port the kernel just handed out is free.
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let log = dir.path().join("scepserver.log");
        let child = Command::new("scepserver")
            .args(["-depot", depot.to_str().unwrap(), "-port", &port.to_string()])
            .args(["-challenge", challenge, "-allowrenew", "0", "-crtvalid", &days.to_string()])
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&log).unwrap())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let s = Scep { _dir: dir, depot, port, child, log };
        let start = Instant::now();
        while TcpStream::connect(("127.0.0.1", s.port)).is_err() {
            assert!(start.elapsed() < Duration::from_secs(20), "scepserver never listened");
            std::thread::sleep(Duration::from_millis(20));
        }
        s
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/scep", self.port)
    }

    fn ca(&self) -> PathBuf {
        self.depot.join("ca.pem")
    }

    /// The CA certificate's SHA-256, for `ScepCaThumbprint`.
    fn thumbprint(&self) -> String {
        dm_shared::pki::Cert::load_pem(&self.ca()).unwrap()[0].thumbprint().to_string()
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Scep {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const CHALLENGE: &str = "enroll-challenge-7f3a9c";

/// Settings for a device that enrolls from `scep` (with `challenge`) and polls `mp` in native
/// mode; `extra` is added to `[Certificates]`.
fn native_settings(action: &str, mp: &Mp, scep: &Scep, challenge: &str, extra: &str) -> String {
    format!(
        "[Installation]\nClientInstallAction={action}\nCertEnrollAction=Enroll\n\
         [Environment]\nManagementPoint={}\nControllerId=dev-1\n\
         [Communication]\nAuthentication=Certificate\nPollInterval=10\nRetryMaxDelay=4\nMinPollInterval=1\n\
         [Certificates]\nScepUrl={}\nScepChallenge={challenge}\nScepCaThumbprint={}\n{extra}",
        mp.url(),
        scep.url(),
        scep.thumbprint()
    )
}

/// A management point whose device CAs are in `trust` (a file the test rewrites to rotate).
fn mp_trusting(trust: &Path) -> Mp {
    let trust = trust.display().to_string();
    Mp::start(move |toml| {
        *toml = toml
            .lines()
            .map(|l| {
                if l.starts_with("client_ca = ") {
                    format!("client_ca = {trust:?}")
                } else {
                    l.into()
                }
            })
            .collect::<Vec<_>>()
            .join("\n");
    })
}

/// A client deployment folder for this host with `ini` as its settings.
fn folder(mp: &Mp, name: &str, version: &str, ini: &str) -> PathBuf {
    let bins = mp.w.path("bins");
    if !bins.exists() {
        mp.w.bin_dir("bins", None);
    }
    mp.w.folder(
        name,
        version,
        &[(&host_platform(), &bins)],
        &[("DMCommonInstaller.ini", ini)],
        None,
    )
}

/// The device's client certificates (`my` store `.pem` files) and the names of every file there.
fn my_store(device: &Path) -> (Vec<dm_shared::pki::Cert>, Vec<String>) {
    let dir = device.join("etc/dm/certs/my");
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .map(|rd| rd.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    names.sort();
    let certs = names
        .iter()
        .filter(|n| n.ends_with(".pem"))
        .map(|n| dm_shared::pki::Cert::load_pem(&dir.join(n)).unwrap().remove(0))
        .collect();
    (certs, names)
}

/// Waits until the device's inventory on `mp` has `key` = `value`.
fn wait_attribute(mp: &Mp, key: &str, value: &str) -> Value {
    let start = Instant::now();
    loop {
        let d = mp.admin_json(&["device", "show", "dev-1"]);
        if d["device"]["attributes"][key] == value {
            return d;
        }
        assert!(start.elapsed() < Duration::from_secs(60), "{key} never became {value}: {d}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Waits until a device log of `prefix` contains `needle`.
fn wait_device_log(device: &Path, prefix: &str, needle: &str) {
    let start = Instant::now();
    while !log_text(device, prefix).contains(needle) {
        assert!(
            start.elapsed() < Duration::from_secs(90),
            "the {prefix} log never said {needle:?}:\n{}",
            log_text(device, prefix)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Every log file of the device, as one text.
fn all_device_logs(device: &Path) -> String {
    log_text(device, "")
}

#[test]
fn an_enrolling_install_polls_in_native_mode_and_a_revoked_device_is_refused_at_once() {
    in_private_network(|| {
        let scep = Scep::start("DM device CA", CHALLENGE, 365);
        let mp = mp_trusting(&scep.ca());
        let device = mp.w.device.clone();
        let f = folder(
            &mp,
            "client",
            "1.0.0.0",
            &native_settings("Install", &mp, &scep, CHALLENGE, ""),
        );
        mp.w.install_from_ok(&f);

        // Enrolled during setup, before the agent first polled, with a log of its own.
        assert_eq!(logs(&device, "DMCertEnroll").len(), 1, "one DMCertEnroll<date-time>.log");
        let enroll_log = log_text(&device, "DMCertEnroll");
        assert!(enroll_log.contains("enrolled: "), "{enroll_log}");
        let (certs, names) = my_store(&device);
        assert_eq!(certs.len(), 1, "{names:?}");
        let cert = &certs[0];
        assert!(cert.subject().contains("CN=dev-1"), "{}", cert.subject());
        assert!(cert.issuer().contains("DM device CA"), "{}", cert.issuer());
        let key = device.join(format!("etc/dm/certs/my/{}.key", cert.thumbprint()));
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&key).unwrap().permissions().mode() & 0o777, 0o600);
        let setup_log = log_text(&device, "DMClientSetup");
        let at = |s: &str| setup_log.find(s).unwrap_or_else(|| panic!("{s:?}:\n{setup_log}"));
        assert!(at("step 6/9: enroll-certificate") < at("step 7/9: switch-pointer"), "{setup_log}");
        assert!(!all_device_logs(&device).contains(CHALLENGE), "the challenge reached a log");

        // The agent polls in native mode with it, and says how the certificate is.
        let d = wait_attribute(&mp, "certificate_health", "valid");
        assert_eq!(d["device"]["registered_by"], "certificate", "{d}");
        assert!(
            d["device"]["attributes"]["certificate_expires"]
                .as_str()
                .unwrap()
                .ends_with(cert.thumbprint()),
            "{d}"
        );

        // Without a certificate, the same controller is refused.
        let root = mp.w.pki.join("root-ca.pem");
        let r = https_agent(&root, None).get(mp.base("dev-1")).call().unwrap();
        assert_eq!(r.status(), 401, "no certificate");

        // Revoked by the administrator: refused from the moment the server has seen it.
        let pem = device.join(format!("etc/dm/certs/my/{}.pem", cert.thumbprint()));
        let as_device = https_agent(&root, Some((pem.to_str().unwrap(), key.to_str().unwrap())));
        assert_eq!(as_device.get(mp.base("dev-1")).call().unwrap().status(), 200);
        mp.admin_seen(&["device", "revoke", "dev-1"]);
        assert_eq!(as_device.get(mp.base("dev-1")).call().unwrap().status(), 403);
        mp.wait_log("was revoked by an administrator");
        wait_device_log(&device, "DMSvc", "403");
    });
}

#[test]
fn a_wrong_challenge_fails_setup_and_leaves_the_device_as_it_was() {
    in_private_network(|| {
        let scep = Scep::start("DM device CA", CHALLENGE, 365);
        let mp = mp_trusting(&scep.ca());
        let device = mp.w.device.clone();
        let wrong = "not-the-challenge-51c2";
        let f = folder(&mp, "wrong", "1.0.0.0", &native_settings("Install", &mp, &scep, wrong, ""));
        let out = mp.w.install_from(&f);
        assert_eq!(out.status.code(), Some(65), "DM_E_ENROLL_REFUSED\n{}", show(&out));
        let enroll_log = log_text(&device, "DMCertEnroll");
        assert!(enroll_log.contains("badRequest"), "the failInfo is named:\n{enroll_log}");
        let setup_log = log_text(&device, "DMClientSetup");
        assert!(setup_log.contains("certificate enrollment failed"), "{setup_log}");
        assert!(setup_log.contains("badRequest"), "setup says the SCEP reason:\n{setup_log}");
        assert!(!all_device_logs(&device).contains(wrong), "the challenge reached a log");
        // Rolled back: no client, no key left behind.
        crate::setup::assert_no_client(&device);
        assert_eq!(my_store(&device).1, Vec::<String>::new());

        // With the right challenge the same device installs.
        let ok = native_settings("Install", &mp, &scep, CHALLENGE, "");
        mp.w.install_from_ok(&folder(&mp, "right", "1.0.0.0", &ok));
        wait_attribute(&mp, "certificate_health", "valid");
    });
}

#[test]
fn a_scep_server_that_is_down_is_retried_then_named_in_a_clear_error() {
    in_private_network(|| {
        let scep = Scep::start("DM device CA", CHALLENGE, 365);
        let mp = mp_trusting(&scep.ca());
        let device = mp.w.device.clone();
        // The right CA pin, but nothing listens at the URL any more.
        let ini = native_settings("Install", &mp, &scep, CHALLENGE, "");
        let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let ini = ini.replace(&scep.url(), &format!("http://127.0.0.1:{dead}/scep"));
        let out = mp.w.install_from(&folder(&mp, "down", "1.0.0.0", &ini));
        assert_eq!(out.status.code(), Some(45), "DM_E_NETWORK\n{}", show(&out));
        let enroll_log = log_text(&device, "DMCertEnroll");
        for attempt in 1..=3 {
            assert!(enroll_log.contains(&format!("(attempt {attempt} of 4)")), "{enroll_log}");
        }
        let url = format!("http://127.0.0.1:{dead}/scep");
        let setup_log = log_text(&device, "DMClientSetup");
        assert!(setup_log.contains(&url), "setup names the server:\n{setup_log}");
        crate::setup::assert_no_client(&device);
    });
}

/// Waits until the device's last poll is after `t` (Unix seconds).
fn wait_poll_after(mp: &Mp, t: i64) {
    let start = Instant::now();
    loop {
        let d = mp.admin_json(&["device", "show", "dev-1"]);
        if d["device"]["last_seen"].as_i64().is_some_and(|s| s > t) {
            return;
        }
        assert!(start.elapsed() < Duration::from_secs(60), "no poll after {t}: {d}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn unix_now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64
}

#[test]
fn the_agent_renews_ahead_of_expiry_and_keeps_the_old_pair_until_the_new_one_worked() {
    in_private_network(|| {
        // Certificates for 30 days, renewed 60 days ahead: due as soon as the agent runs.
        let scep = Scep::start("DM device CA", CHALLENGE, 30);
        let mp = mp_trusting(&scep.ca());
        let device = mp.w.device.clone();
        let ini = native_settings("Install", &mp, &scep, CHALLENGE, "RenewDaysBeforeExpiry=60\n");
        mp.w.install_from_ok(&folder(&mp, "client", "1.0.0.0", &ini));
        let first = my_store(&device).0.remove(0);

        wait_device_log(&device, "DMSvc", "accepted the renewed client certificate");
        let (certs, names) = my_store(&device);
        assert_eq!(certs.len(), 1, "the old pair is gone once the new one worked: {names:?}");
        let renewed = &certs[0];
        assert_ne!(renewed.thumbprint(), first.thumbprint());
        assert!(names.contains(&format!("{}.key", renewed.thumbprint())), "{names:?}");
        assert!(!device.join("var/lib/dm/cert-rotation.json").exists());
        let logs = logs(&device, "DMCertEnroll");
        assert_eq!(logs.len(), 2, "setup's enrollment and the agent's renewal: {logs:?}");
        let renewal = std::fs::read_to_string(&logs[1]).unwrap();
        assert!(renewal.contains("renewing a certificate for CN=dev-1"), "{renewal}");
        assert!(renewal.contains("RenewalReq"), "signed with the current key:\n{renewal}");
        let agent = log_text(&device, "DMSvc");
        assert!(!agent.contains("poll failed"), "{agent}");
        let d = wait_attribute(&mp, "certificate_health", "expiring");
        let expires = d["device"]["attributes"]["certificate_expires"].as_str().unwrap();
        assert!(expires.ends_with(renewed.thumbprint()), "{d}");
        // The server took the new certificate as the same device.
        wait_poll_after(&mp, unix_now());
        let d = mp.admin_json(&["device", "show", "dev-1"]);
        assert_eq!(d["device"]["registered_by"], "certificate", "{d}");
    });
}

#[test]
fn a_device_ca_rotation_moves_devices_to_the_new_ca_with_no_poll_failing() {
    in_private_network(|| {
        let old_ca = Scep::start("DM device CA 2026", CHALLENGE, 365);
        let new_ca = Scep::start("DM device CA 2027", "new-ca-challenge-0d4e", 400);
        let trust_dir = tempfile::tempdir().unwrap();
        let trust = trust_dir.path().join("device-cas.pem");
        std::fs::copy(old_ca.ca(), &trust).unwrap();
        let mp = mp_trusting(&trust);
        let device = mp.w.device.clone();
        let ini = native_settings("Install", &mp, &old_ca, CHALLENGE, "");
        mp.w.install_from_ok(&folder(&mp, "client", "1.0.0.0", &ini));
        wait_attribute(&mp, "certificate_health", "valid");
        let first = my_store(&device).0.remove(0);
        assert!(first.issuer().contains("DM device CA 2026"), "{}", first.issuer());

        // 1. The management point trusts both CAs (docs/certificates.md, "Rotating the
        //    device CA"): no restart.
        let pem = |p: &Path| std::fs::read_to_string(p).unwrap();
        std::fs::write(&trust, pem(&old_ca.ca()) + &pem(&new_ca.ca())).unwrap();
        mp.wait_log("device CAs loaded: 2");
        // 2. Devices get the new CA's SCEP server and renew early (here: at once).
        let ini = native_settings(
            "None",
            &mp,
            &new_ca,
            "new-ca-challenge-0d4e",
            "RenewDaysBeforeExpiry=365\n",
        );
        mp.w.install_from_ok(&folder(&mp, "reconfigure", "1.0.0.0", &ini));
        wait_device_log(&device, "DMSvc", "accepted the renewed client certificate");
        let (certs, names) = my_store(&device);
        assert_eq!(certs.len(), 1, "{names:?}");
        assert!(certs[0].issuer().contains("DM device CA 2027"), "{}", certs[0].issuer());
        let renewal =
            std::fs::read_to_string(logs(&device, "DMCertEnroll").pop().unwrap()).unwrap();
        assert!(renewal.contains("enrolling afresh with the challenge"), "{renewal}");
        // 3. The old CA is retired: the device goes on polling.
        std::fs::write(&trust, pem(&new_ca.ca())).unwrap();
        mp.wait_log("device CAs loaded: 1");
        let retired = unix_now();
        wait_poll_after(&mp, retired + 2);
        let agent = log_text(&device, "DMSvc");
        assert!(!agent.contains("poll failed"), "a poll failed during the rotation:\n{agent}");
        assert!(!mp.log_text().contains("not issued by this server's client CA"));
        let _ = old_ca.log_text();
    });
}

#[test]
fn the_aarch64_dmcertenroll_enrolls_under_qemu() {
    let Some((runner, program)) = cross_bin("aarch64-unknown-linux-gnu", "dmcertenroll") else {
        return;
    };
    in_private_network(move || {
        let scep = Scep::start("DM device CA", CHALLENGE, 365);
        let mp = mp_trusting(&scep.ca());
        let device = mp.w.device.clone();
        // A client that polls with a token and is told where to enroll; then the ARM program
        // enrolls for it.
        mp.admin(&["device", "add", "--id", "dev-1", "--token", "tok-arm-1"]);
        let ini = native_settings("Install", &mp, &scep, CHALLENGE, "")
            .replace("CertEnrollAction=Enroll", "CertEnrollAction=None")
            .replace("Authentication=Certificate", "TargetToken=tok-arm-1");
        mp.w.install_from_ok(&folder(&mp, "client", "1.0.0.0", &ini));
        let out = run(
            Command::new(&runner[0])
                .args(&runner[1..])
                .arg(&program)
                .arg("--device-root")
                .arg(&device),
            Duration::from_secs(300),
        );
        assert!(out.status.success(), "{}\n{}", show(&out), log_text(&device, "DMCertEnroll"));
        let (certs, names) = my_store(&device);
        assert_eq!(certs.len(), 1, "{names:?}");
        assert!(certs[0].subject().contains("CN=dev-1"));
        assert!(log_text(&device, "DMCertEnroll").contains("(linux-aarch64)"));
    });
}
