//! rauc-hawkbit, a second real DDI client (Python, from PyPI, installed by
//! scripts/setup-peers.sh), against the real management point: it polls, sends the inventory
//! it knows, downloads a raw RAUC bundle, hands it to RAUC over D-Bus, and reports progress in
//! its own shapes (`{"percentage": 40}`, `{}`) until the action is finished. RAUC itself is
//! played by tests/peers/fake_rauc.py on a private D-Bus daemon, as rauc-hawkbit's own
//! development does; what it is given is checked byte for byte.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::mp::Mp;
use crate::util::*;

/// Children the test started, killed when it ends.
pub struct Kill(pub Vec<Child>);

impl Drop for Kill {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn venv() -> PathBuf {
    let v = workspace_root().join("target/peers/rauc-hawkbit");
    assert!(
        v.join("bin/rauc-hawkbit-client").exists(),
        "rauc-hawkbit is installed by scripts/setup-peers.sh into {}",
        v.display()
    );
    v
}

/// A private D-Bus daemon; returns it and its address.
pub fn private_bus() -> (Child, String) {
    let mut bus = Command::new("dbus-daemon")
        .args(["--session", "--nofork", "--nopidfile", "--print-address=1"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("dbus-daemon is installed by scripts/setup-peers.sh");
    let mut line = String::new();
    BufReader::new(bus.stdout.take().unwrap()).read_line(&mut line).unwrap();
    (bus, line.trim().to_string())
}

#[test]
fn rauc_hawkbit_installs_a_bundle_through_the_management_point() {
    let venv = venv();
    let mp = Mp::start(|_| {});
    let token = "tok-rauc-0001";
    mp.admin(&["device", "add", "--id", "rauc-1", "--token", token]);
    // A RAUC bundle is one raw artifact for the server; RAUC checks its own signature.
    let bundle = mp.w.path("rootfs-2.0.0.raucb");
    let bytes: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(&bundle, &bytes).unwrap();
    let raw = ["package", "add", "--raw", bundle.to_str().unwrap(), "--name", "rootfs"];
    mp.admin(&[&raw[..], &["--package-version", "2.0.0"]].concat());
    mp.admin(&[
        "program",
        "add",
        "--package",
        "rootfs",
        "--name",
        "install",
        "--command",
        "rauc install",
    ]);
    mp.admin(&["collection", "add", "--name", "all", "--rule", "all"]);
    mp.admin(&[
        "advertise",
        "--name",
        "rootfs-2",
        "--program",
        "install",
        "--collection",
        "all",
        "--mandatory",
    ]);

    let (bus, address) = private_bus();
    let mut children = Kill(vec![bus]);
    let rauc_log = mp.w.path("fake-rauc.log");
    let python = venv.join("bin/python");
    children.0.push(
        Command::new(&python)
            .arg(workspace_root().join("tests/peers/fake_rauc.py"))
            .env("DBUS_SYSTEM_BUS_ADDRESS", &address)
            .env("FAKE_RAUC_LOG", &rauc_log)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let downloads = mp.w.path("downloads");
    std::fs::create_dir_all(&downloads).unwrap();
    let cfg = mp.w.path("rauc-hawkbit.cfg");
    std::fs::write(
        &cfg,
        format!(
            "[client]\nhawkbit_server = 127.0.0.1:{}\nssl = true\ntenant_id = DEFAULT\ntarget_name = rauc-1\n\
             auth_token = {token}\nmac_address = 12:34:56:78:9A:BC\nbundle_download_location = {}\nlog_level = debug\n",
            mp.port,
            downloads.join("bundle.raucb").display()
        ),
    )
    .unwrap();
    let client_log = mp.w.path("rauc-hawkbit.log");
    children.0.push(
        Command::new(&python)
            .arg(venv.join("bin/rauc-hawkbit-client"))
            .arg("-c")
            .arg(&cfg)
            .env("DBUS_SYSTEM_BUS_ADDRESS", &address)
            // Python's default TLS context trusts the demo root through this.
            .env("SSL_CERT_FILE", mp.w.pki.join("root-ca.pem"))
            .stdout(std::fs::File::create(&client_log).unwrap())
            .stderr(std::fs::File::create(mp.w.path("rauc-hawkbit.err")).unwrap())
            .spawn()
            .unwrap(),
    );

    let start = Instant::now();
    loop {
        let st = mp.admin_json(&["advertisement", "status", "rootfs-2"]);
        if st["counts"]["finished"] == 1 {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(90),
            "rauc-hawkbit never finished: {st}\n--- client:\n{}{}\n--- dmmp:\n{}",
            std::fs::read_to_string(&client_log).unwrap_or_default(),
            std::fs::read_to_string(mp.w.path("rauc-hawkbit.err")).unwrap_or_default(),
            mp.log_text()
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    // RAUC was given exactly the bundle the administrator added.
    let installed = std::fs::read_to_string(&rauc_log).unwrap();
    let sha = dm_shared::pki::sha256_hex(&bytes);
    assert!(installed.contains(&format!(" {} {sha}", bytes.len())), "{installed}");
    // Its progress, in rauc-hawkbit's own shapes, was taken and stored; so was its inventory.
    let d = mp.admin_json(&["device", "show", "rauc-1"]);
    let history = d["history"].to_string();
    assert!(history.contains("Checking manifest contents"), "{history}");
    assert_eq!(d["device"]["attributes"]["MAC"], "12:34:56:78:9A:BC", "{d}");
    // Nothing it sent was refused: not its progress shapes (once 400), nor its inventory
    // right after the device was added (once 404, and a minute lost).
    let log = mp.log_text();
    assert!(!log.contains(" 400 ") && !log.contains(" 404 "), "{log}");
}
